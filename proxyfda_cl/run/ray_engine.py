"""The Ray executor of a sweep: one Ray task per run, with its CPU and GPU resources.

Workers write records atomically into the results folder, which must be shared by every
node (a network file system); the driver only tracks completion. A task whose worker dies
is recorded as failed by the driver. Install with ``pip install "proxyfda-cl[ray]"``.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..core.errors import ConfigError


def run_on_ray(args: list, *, run: Callable[..., dict], crashed: Callable[[dict, str], dict],
               address: Optional[str], cpus_per_run: float, gpus_per_run: float,
               started: Callable[[], None], update: Callable[[dict], None],
               num_cpus: Optional[int] = None) -> None:
    """Submit ``run(*a)`` for every tuple ``a`` of ``args`` as a Ray task and wait.

    With no ``address`` a local Ray instance of ``num_cpus`` CPUs (default: the machine's)
    starts and is shut down at the end; ``auto`` joins the cluster this machine belongs to;
    ``ray://host:10001`` connects a remote client. If Ray is already initialised in this
    process, that instance is used as is.

    Args:
        args: one tuple of ``run`` arguments per run, its first the run's config dict.
        run: what a task executes (the sweep's ``run_one``; it returns a result dict and
            never raises).
        crashed: ``crashed(cfg_dict, error)``, the result of a task whose worker died (the
            sweep's ``record_crash``).
        address: the cluster to join, or None for a local instance.
        cpus_per_run, gpus_per_run: resources of each task.
        started: called once per submitted run.
        update: called with each run's result dict as it finishes.
        num_cpus: CPUs of a local instance.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError('--engine ray: Ray is not installed; '
                          'pip install "proxyfda-cl[ray]"') from None
    if not args:
        return
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": num_cpus}
        try:
            ray.init(log_to_driver=False, include_dashboard=False,
                     **{k: v for k, v in kwargs.items() if v is not None})
        except ConnectionError as e:
            raise ConfigError(f"--address {address}: cannot connect to Ray ({e}); "
                              "check the address and that the cluster is up") from None
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run)
        pending = {}
        for a in args:
            pending[task.remote(*a)] = a
            started()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                a = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # the worker died or the task was cancelled
                    first = str(e).splitlines()[0] if str(e) else "the Ray task failed"
                    res = crashed(a[0], f"{e.__class__.__name__}: {first}")
                update(res)
    finally:
        if started_here:
            ray.shutdown()
