"""Checkpoints and resume: a run interrupted in its second experience resumes after the first
and ends exactly where an uninterrupted run ends (CPU, same seed); runs are deterministic."""
import pytest
import torch

from proxyfda_cl.run import runner
from proxyfda_cl.config import from_dict
from proxyfda_cl.core.record import read_record
from proxyfda_cl.run.runner import checkpoint_dir, record_path, run
from tests.conftest import small_config_dict

STRATEGIES = ["naive", "proxy_fda", "ewc"]
#: strategies with more plugin state: the previous model, a kept pre-trained teacher, a
#: learned temperature with its optimizer
MORE = {"lwf": {"name": "lwf"},
        "fda-pretrained": {"name": "fda", "teacher": "pretrained", "learnable_temperature": True},
        "ldifs-pretrained": {"name": "ldifs", "teacher": "pretrained"}}
_REFERENCE: dict = {}


class Interrupt(Exception):
    """Stands for a crash in the middle of training."""


def _trained_experiences(monkeypatch, crash_in: int = -1) -> list:
    """Patch the runner's step timer to log each experience it trains and to raise after the
    first update of experience ``crash_in`` (0-based); returns the log."""
    log = []

    class Spy(runner.StepTimerPlugin):
        def before_training_exp(self, strategy, **kwargs):
            super().before_training_exp(strategy, **kwargs)
            log.append(strategy.experience.current_experience)

        def after_training_iteration(self, strategy, **kwargs):
            super().after_training_iteration(strategy, **kwargs)
            if strategy.experience.current_experience == crash_in:
                raise Interrupt("killed mid-experience")

    monkeypatch.setattr(runner, "StepTimerPlugin", Spy)
    return log


def _cfg(out, weights, strategy, seed=0):
    data = small_config_dict(str(out), weights, strategy=strategy, seed=seed)
    data["strategy"] = dict(MORE.get(strategy, data["strategy"]))
    return from_dict(data)


def _reference(strategy, weights, tmp_path_factory):
    """An uninterrupted run (record and final checkpoint), computed once per strategy."""
    if strategy not in _REFERENCE:
        cfg = _cfg(tmp_path_factory.mktemp(f"ref-{strategy}"), weights, strategy)
        rec = run(cfg, keep_checkpoints=True)
        ckpt = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=True)
        _REFERENCE[strategy] = (rec, ckpt)
    return _REFERENCE[strategy]


def _results(rec: dict) -> dict:
    """Everything a record computes (timings and creation time aside)."""
    return {"metrics": rec["metrics"], "matrices": rec["matrices"],
            "distances": rec["distances"], "id": rec["id"]}


def _assert_same_state(a: dict, b: dict, strategy: str) -> None:
    sa, sb = a["model"]["weights"], b["model"]["weights"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = a["optimizer"], b["optimizer"]
    assert [len(g["params"]) for g in oa["param_groups"]] == [
        len(g["params"]) for g in ob["param_groups"]]
    assert oa["state"].keys() == ob["state"].keys() and oa["state"]  # momentum buffers kept
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)
    _assert_equal(a["plugins"], b["plugins"], "plugins")
    if strategy == "proxy_fda":
        pa, pb = a["plugins"][0]["generators"]["final"], b["plugins"][0]["generators"]["final"]
        for k, v in pa["model"].items():
            assert torch.equal(v, pb["model"][k]), k
        ga, gb = pa["optimizer"], pb["optimizer"]
        assert ga["state"].keys() == gb["state"].keys() and ga["state"]
        for i in ga["state"]:
            for k, v in ga["state"][i].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(gb["state"][i][k])), (i, k)


def _assert_equal(a, b, where: str) -> None:
    """``a`` and ``b`` equal: tensors element for element, containers recursively."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("strategy", STRATEGIES + [
    pytest.param(name, marks=pytest.mark.slow) for name in MORE])
@pytest.mark.slow
def test_interrupted_run_resumes_and_matches_an_uninterrupted_run(
        strategy, tmp_path, tiny_weights, tmp_path_factory, monkeypatch):
    ref_rec, ref_ckpt = _reference(strategy, tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, strategy)
    with monkeypatch.context() as m:
        log = _trained_experiences(m, crash_in=1)
        with pytest.raises(Interrupt):
            run(cfg)
    assert log == [0, 1]
    assert read_record(record_path(cfg))["status"] == "failed"
    ckpt = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["state"]["R"]) == 1  # the checkpoint of experience 1 only
    if strategy == "proxy_fda":  # the generator and its optimizer are in the checkpoint
        generator = ckpt["plugins"][0]["generators"]["final"]
        assert generator["model"]["projection"].shape[0] > 0 and generator["optimizer"]["state"]
    if strategy == "ewc":  # Avalanche's ParamData as tensors
        assert ckpt["plugins"][0]["saved_params"][0] and ckpt["plugins"][0]["importances"][0]
    if strategy == "lwf":
        assert ckpt["plugins"][0]["prev_model"] and ckpt["plugins"][0]["prev_classes_by_task"]
    if strategy.endswith("-pretrained"):  # the frozen pre-trained encoder survives
        teacher = ckpt["plugins"][0]["teacher"]
        assert teacher and any(not torch.equal(v, ckpt["model"]["weights"][f"encoder.{k}"])
                               for k, v in teacher.items())
    if strategy == "fda-pretrained":
        assert ckpt["plugins"][0]["temperature_optimizer"]["state"]

    events = []
    with monkeypatch.context() as m:
        log = _trained_experiences(m)
        rec = run(cfg, keep_checkpoints=True, on_event=events.append)
    assert log == [1]  # only the second experience was trained again
    assert any(e.startswith("resuming after experience 1") for e in events), events
    assert not any(e.startswith("experience 1/2") for e in events)
    assert rec["status"] == "complete" and read_record(record_path(cfg))["status"] == "complete"
    assert _results(rec) == _results(ref_rec)
    # the stage times go on from the checkpoint: both experiences' steps are counted, by the
    # step timer and, for a strategy with a teacher, by the restored plugins' teacher
    steps = sum(e["steps"] for e in rec["timing"]["per_experience"])
    assert rec["timing"]["stages"]["data_wait"]["calls"] == steps
    if strategy == "proxy_fda":
        assert rec["timing"]["stages"]["teacher"]["calls"] == steps
    final = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=True)
    _assert_same_state(final, ref_ckpt, strategy)


@pytest.mark.slow
def test_same_config_and_seed_give_identical_results(tmp_path, tiny_weights, tmp_path_factory):
    ref_rec, ref_ckpt = _reference("proxy_fda", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path / "again", tiny_weights, "proxy_fda")
    rec = run(cfg, keep_checkpoints=True)
    assert _results(rec) == _results(ref_rec)
    final = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=True)
    _assert_same_state(final, ref_ckpt, "proxy_fda")
    other = run(_cfg(tmp_path / "seed1", tiny_weights, "proxy_fda", seed=1))
    assert other["matrices"]["P"] != ref_rec["matrices"]["P"]  # the seed matters


@pytest.mark.slow
def test_unreadable_checkpoint_means_starting_over(tmp_path, tiny_weights, tmp_path_factory,
                                                   monkeypatch):
    ref_rec, _ = _reference("naive", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, "naive")
    checkpoint_dir(cfg).mkdir(parents=True)
    (checkpoint_dir(cfg) / "last.pt").write_bytes(b"not a checkpoint")
    log = _trained_experiences(monkeypatch)
    rec = run(cfg)
    assert log == [0, 1]
    assert _results(rec) == _results(ref_rec)
    assert not checkpoint_dir(cfg).exists()  # deleted once the record is complete


@pytest.mark.slow
def test_overwrite_ignores_a_kept_checkpoint(tmp_path, tiny_weights, tmp_path_factory,
                                             monkeypatch):
    ref_rec, _ = _reference("naive", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, "naive")
    run(cfg, keep_checkpoints=True)
    assert (checkpoint_dir(cfg) / "last.pt").exists()
    events = []
    log = _trained_experiences(monkeypatch)
    rec = run(cfg, overwrite=True, on_event=events.append)
    assert log == [0, 1] and not any("resuming" in e for e in events)
    assert _results(rec) == _results(ref_rec)


@pytest.mark.slow
def test_checkpoint_from_another_device_is_not_resumed(tmp_path, tiny_weights, tmp_path_factory,
                                                       monkeypatch):
    ref_rec, _ = _reference("naive", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, "naive")
    with monkeypatch.context() as m:
        _trained_experiences(m, crash_in=1)
        with pytest.raises(Interrupt):
            run(cfg)
    path = checkpoint_dir(cfg) / "last.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["device"] == "cpu"
    torch.save({**ckpt, "device": "cuda:0"}, path)
    events = []
    log = _trained_experiences(monkeypatch)
    rec = run(cfg, on_event=events.append)
    assert log == [0, 1] and any("starting over" in e for e in events), events
    assert _results(rec) == _results(ref_rec)

