"""The Ray executor of a sweep: one Ray task per run, with its CPU and GPU resources.

Workers write records atomically into the shared results folder, so the driver only
tracks completion. Install with ``pip install "proxyfda-cl[ray]"``.
"""
from __future__ import annotations

from typing import Callable, Optional

from .errors import ConfigError


def run_on_ray(args: list, *, address: Optional[str], cpus_per_run: float, gpus_per_run: float,
               counts: dict, update: Callable[[dict], None]) -> None:
    """Submit every ``(cfg_dict, keep_checkpoints, overwrite)`` as a Ray task and wait.

    With no ``address`` a local Ray instance starts; ``auto`` joins the cluster this
    machine belongs to; ``ray://host:10001`` connects a remote client.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError('--engine ray: Ray is not installed; pip install "proxyfda-cl[ray]"') from None
    from .sweep import run_one

    if not args:
        return
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": None}
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                 **{k: v for k, v in kwargs.items() if v is not None})
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_one)
        refs = []
        for a in args:
            refs.append(task.remote(*a))
            counts["running"] += 1
            counts["remaining"] -= 1
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            for ref in done:
                update(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()
