"""Checkpoints and resume: a run interrupted in its second experience resumes after the first
and ends exactly where an uninterrupted run ends (CPU, same seed); runs are deterministic."""
import pytest
import torch

from proxyfda_cl.run import session
from proxyfda_cl.config import from_dict
from proxyfda_cl.core.record import read_record
from proxyfda_cl.run.runner import checkpoint_dir, record_path, run
from tests.conftest import small_config_dict

STRATEGIES = ["naive", "proxy_fda", "ewc"]
_REFERENCE: dict = {}


class Interrupt(Exception):
    """Stands for a crash in the middle of training."""


def _trained_experiences(monkeypatch, crash_in: int = -1) -> list:
    """Patch the runner's step timer to log each experience it trains and to raise after the
    first update of experience ``crash_in`` (0-based); returns the log."""
    log = []

    class Spy(session.StepTimerPlugin):
        def before_training_exp(self, strategy, **kwargs):
            super().before_training_exp(strategy, **kwargs)
            log.append(strategy.experience.current_experience)

        def after_training_iteration(self, strategy, **kwargs):
            super().after_training_iteration(strategy, **kwargs)
            if strategy.experience.current_experience == crash_in:
                raise Interrupt("killed mid-experience")

    monkeypatch.setattr(session, "StepTimerPlugin", Spy)
    return log


def _cfg(out, weights, strategy, seed=0):
    return from_dict(small_config_dict(str(out), weights, strategy=strategy, seed=seed))


def _reference(strategy, weights, tmp_path_factory):
    """An uninterrupted run (record and final checkpoint), computed once per strategy."""
    if strategy not in _REFERENCE:
        cfg = _cfg(tmp_path_factory.mktemp(f"ref-{strategy}"), weights, strategy)
        rec = run(cfg, keep_checkpoints=True)
        ckpt = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=False)
        _REFERENCE[strategy] = (rec, ckpt)
    return _REFERENCE[strategy]


def _results(rec: dict) -> dict:
    """Everything a record computes (timings and creation time aside)."""
    return {"metrics": rec["metrics"], "matrices": rec["matrices"],
            "distances": rec["distances"], "id": rec["id"]}


def _assert_same_state(a: dict, b: dict, strategy: str) -> None:
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
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
    if strategy == "proxy_fda":
        pa, pb = a["plugins"][0], b["plugins"][0]
        for k, v in pa.generator.state_dict().items():
            assert torch.equal(v, pb.generator.state_dict()[k]), k
        ga, gb = pa.generators["final"][1].state_dict(), pb.generators["final"][1].state_dict()
        assert ga["state"].keys() == gb["state"].keys() and ga["state"]
        for i in ga["state"]:
            for k, v in ga["state"][i].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(gb["state"][i][k])), (i, k)


@pytest.mark.parametrize("strategy", STRATEGIES)
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
    ckpt = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=False)
    assert len(ckpt["state"]["R"]) == 1  # the checkpoint of experience 1 only
    if strategy == "proxy_fda":  # the generator and its optimizer are in the checkpoint
        generator, optimizer = ckpt["plugins"][0].generators["final"]
        assert generator is ckpt["plugins"][0].generator and optimizer.state

    events = []
    with monkeypatch.context() as m:
        log = _trained_experiences(m)
        rec = run(cfg, keep_checkpoints=True, on_event=events.append)
    assert log == [1]  # only the second experience was trained again
    assert any(e.startswith("resuming after experience 1") for e in events), events
    assert not any(e.startswith("experience 1/2") for e in events)
    assert rec["status"] == "complete" and read_record(record_path(cfg))["status"] == "complete"
    assert _results(rec) == _results(ref_rec)
    final = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=False)
    _assert_same_state(final, ref_ckpt, strategy)


def test_same_config_and_seed_give_identical_results(tmp_path, tiny_weights, tmp_path_factory):
    ref_rec, ref_ckpt = _reference("proxy_fda", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path / "again", tiny_weights, "proxy_fda")
    rec = run(cfg, keep_checkpoints=True)
    assert _results(rec) == _results(ref_rec)
    final = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=False)
    _assert_same_state(final, ref_ckpt, "proxy_fda")
    other = run(_cfg(tmp_path / "seed1", tiny_weights, "proxy_fda", seed=1))
    assert other["matrices"]["P"] != ref_rec["matrices"]["P"]  # the seed matters


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


def test_checkpoint_from_another_device_is_not_resumed(tmp_path, tiny_weights, tmp_path_factory,
                                                       monkeypatch):
    ref_rec, _ = _reference("naive", tiny_weights, tmp_path_factory)
    cfg = _cfg(tmp_path, tiny_weights, "naive")
    with monkeypatch.context() as m:
        _trained_experiences(m, crash_in=1)
        with pytest.raises(Interrupt):
            run(cfg)
    path = checkpoint_dir(cfg) / "last.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert ckpt["device"] == "cpu"
    torch.save({**ckpt, "device": "cuda:0"}, path)
    events = []
    log = _trained_experiences(monkeypatch)
    rec = run(cfg, on_event=events.append)
    assert log == [0, 1] and any("starting over" in e for e in events), events
    assert _results(rec) == _results(ref_rec)
