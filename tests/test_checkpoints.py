"""The checkpoint's format: state_dicts and plain data, read with ``weights_only=True``; one
that does not fit the run is discarded with one line and the run starts over, one of another
version that fits is resumed."""
import copy
import random

import numpy as np
import pytest
import torch

from proxyfda_cl.core.runtime import rng_state, set_rng_state
from proxyfda_cl.core.version import __version__
from proxyfda_cl.run.runner import checkpoint_dir, run
from tests.test_resume import Interrupt, _cfg, _reference, _results, _trained_experiences

_CRASHED: dict = {}


def _crashed(strategy, weights, tmp_path_factory) -> dict:
    """The checkpoint of a run killed in its second experience, made once per strategy."""
    if strategy not in _CRASHED:
        cfg = _cfg(tmp_path_factory.mktemp(f"crash-{strategy}"), weights, strategy)
        with pytest.MonkeyPatch.context() as m:
            _trained_experiences(m, crash_in=1)
            with pytest.raises(Interrupt):
                run(cfg)
        _CRASHED[strategy] = torch.load(checkpoint_dir(cfg) / "last.pt", weights_only=True)
    return copy.deepcopy(_CRASHED[strategy])


def _plain_only(obj, where: str = "checkpoint") -> None:
    """Only tensors, numbers, strings, None and lists, tuples and dicts of them."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            _plain_only(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _plain_only(v, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (torch.Tensor, int, float, bool, str), \
            f"{where}: {type(obj).__name__}"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["naive", "proxy_fda"])
def test_a_checkpoint_holds_state_dicts_and_plain_data(strategy, tiny_weights, tmp_path_factory):
    _, ckpt = _reference(strategy, tiny_weights, tmp_path_factory)  # read with weights_only
    assert set(ckpt) == {"model", "plugins", "optimizer", "optimizer_params", "clock", "state",
                         "reference", "initial", "rng", "device", "version"}
    _plain_only(ckpt)
    assert ckpt["model"]["weights"]["heads.classifiers.1.classifier.weight"].shape[0] == 4
    assert len(ckpt["state"]["R"]) == 2 and ckpt["clock"]["train_exp_counter"] == 2


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves NumPy a cached Gaussian
    torch.save(rng_state(), tmp_path / "rng.pt")
    draws = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == draws


def _drop_bias(c):
    del c["model"]["weights"]["heads.classifiers.0.classifier.bias"]


def _reshape_encoder(c):
    w = c["model"]["weights"]
    key = next(k for k in w if k.startswith("encoder.") and w[k].dim() > 1)
    w[key] = torch.zeros(*w[key].shape[:-1], w[key].shape[-1] + 1)


def _reshape_generator(c):
    gen = c["plugins"][0]["generators"]["final"]["model"]
    gen["projection"] = gen["projection"][:, :-1]


@pytest.mark.parametrize("strategy, damage, why", [
    ("naive", _drop_bias, "Missing key"),
    ("naive", _reshape_encoder, "size mismatch"),
    ("naive", lambda c: c.pop("rng"), "KeyError: 'rng'"),
    pytest.param("proxy_fda", _reshape_generator, "size mismatch", marks=pytest.mark.slow),
])
@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_is_discarded_with_one_line(
        strategy, damage, why, tmp_path, tiny_weights, tmp_path_factory, monkeypatch):
    ref_rec, _ = _reference(strategy, tiny_weights, tmp_path_factory)
    ckpt = _crashed(strategy, tiny_weights, tmp_path_factory)
    damage(ckpt)
    cfg = _cfg(tmp_path, tiny_weights, strategy)
    checkpoint_dir(cfg).mkdir(parents=True)
    torch.save(ckpt, checkpoint_dir(cfg) / "last.pt")
    events = []
    log = _trained_experiences(monkeypatch)
    rec = run(cfg, on_event=events.append)
    lines = [e for e in events if str(checkpoint_dir(cfg) / "last.pt") in e]
    assert len(lines) == 1 and not any(e.startswith("resuming") for e in events), events
    assert "does not fit" in lines[0] and why in lines[0] and "starting over" in lines[0]
    assert "\n" not in lines[0]
    assert log == [0, 1] and _results(rec) == _results(ref_rec)


@pytest.mark.slow
def test_an_old_pickled_checkpoint_is_discarded_with_one_line(tmp_path, tiny_weights,
                                                               tmp_path_factory, monkeypatch):
    ref_rec, _ = _reference("naive", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, "naive")
    checkpoint_dir(cfg).mkdir(parents=True)
    torch.save({"model": torch.nn.Linear(2, 2), "device": "cpu"}, checkpoint_dir(cfg) / "last.pt")
    events = []
    log = _trained_experiences(monkeypatch)
    rec = run(cfg, on_event=events.append)
    lines = [e for e in events if str(checkpoint_dir(cfg) / "last.pt") in e]
    assert len(lines) == 1 and "unreadable" in lines[0] and "starting over" in lines[0], events
    assert log == [0, 1] and _results(rec) == _results(ref_rec)


@pytest.mark.slow
def test_a_checkpoint_of_another_version_that_fits_is_resumed(tmp_path, tiny_weights,
                                                              tmp_path_factory, monkeypatch):
    ref_rec, _ = _reference("naive", tiny_weights, tmp_path_factory)
    ckpt = _crashed("naive", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, "naive")
    checkpoint_dir(cfg).mkdir(parents=True)
    torch.save({**ckpt, "version": "0.0.1"}, checkpoint_dir(cfg) / "last.pt")
    events = []
    log = _trained_experiences(monkeypatch)
    rec = run(cfg, on_event=events.append)
    assert log == [1] and any(e.startswith("resuming after experience 1") for e in events)
    assert _results(rec) == _results(ref_rec)
    assert rec["warnings"] == [f"experiences 1-1 were trained by proxyfda-cl 0.0.1, the rest "
                               f"by {__version__} (resumed from its checkpoint)"]


def test_ewc_state_round_trips_through_a_weights_only_load(tmp_path):
    from avalanche.training.utils import ParamData

    from proxyfda_cl.strategies import build_strategy

    plugin = build_strategy("ewc", {"mode": "online"}).plugins[0]
    plugin.saved_params[0] = {"w": ParamData("w", init_tensor=torch.ones(2, 3))}
    plugin.importances[0] = {"w": ParamData("imp_w", init_tensor=torch.full((2, 3), 3.0))}
    torch.save(plugin.state_dict(), tmp_path / "ewc.pt")
    fresh = build_strategy("ewc", {"mode": "online"}).plugins[0]
    fresh.load_state_dict(torch.load(tmp_path / "ewc.pt", weights_only=True))
    imp = fresh.importances[0]["w"]
    assert imp.name == "imp_w" and imp.shape == (2, 3) and torch.equal(imp.data, 3 * torch.ones(2, 3))
    assert torch.equal(fresh.saved_params[0]["w"].data, torch.ones(2, 3))
    assert fresh.saved_params[5] == {}  # still Avalanche's defaultdict


@pytest.mark.slow
def test_a_sweep_worker_passes_on_the_discarded_checkpoint(tmp_path, tiny_weights):
    """A sweep runs each config in a worker (``run_one``): the one line saying a checkpoint
    was discarded comes back with the result, for the sweep to show."""
    from proxyfda_cl.config import to_dict
    from proxyfda_cl.run.sweep import run_one

    cfg = _cfg(tmp_path, tiny_weights, "naive")
    checkpoint_dir(cfg).mkdir(parents=True)
    (checkpoint_dir(cfg) / "last.pt").write_bytes(b"not a checkpoint")
    res = run_one(to_dict(cfg))
    assert res["status"] == "complete" and len(res["notes"]) == 1
    assert "unreadable" in res["notes"][0] and res["notes"][0].endswith("starting over")
