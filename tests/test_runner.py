"""A two-experience run end to end on tiny data: a valid record, skip-existing, failures."""
import json

import pytest

from proxyfda_cl.config import from_dict
from proxyfda_cl.core.record import read_record
from proxyfda_cl.core.typed_record import read_results
from proxyfda_cl.run.runner import record_path, run
from tests.conftest import small_config_dict


@pytest.mark.slow
def test_two_experience_run_gives_a_valid_record(tmp_path, tiny_weights):
    cfg = from_dict(small_config_dict(str(tmp_path), tiny_weights))
    rec = run(cfg)
    path = record_path(cfg)
    assert path.exists()
    disk = read_record(path)
    assert disk["status"] == "complete" and disk["id"] == cfg.id
    assert disk["config"]["strategy"]["name"] == "naive" and disk["config"]["seed"] == 0
    assert disk["hyperparameters"] == {"strategy": "naive", "values": {}, "non_default": [],
                                      "revision": 1}
    m = disk["matrices"]
    assert m["R_columns"] == ["concept:shape[0:3]", "digits[0:4]"]
    assert m["P_columns"] == ["concept:shape[0:3]", "digits[0:4]", "concept:colour[0:3]"]
    assert len(m["R"]) == 2 and all(len(r) == 2 for r in m["R"])
    assert len(m["P"]) == 3 and all(len(r) == 3 for r in m["P"])
    for row in m["P"]:
        assert all(0.0 <= v <= 1.0 for v in row)
    # R[t][j] is measured for the tasks seen so far and undefined after
    assert m["R"][0][1] is None
    assert all(0.0 <= v <= 1.0 for v in (m["R"][0][0], m["R"][1][0], m["R"][1][1]))
    final = disk["metrics"]["final"]
    assert set(final) >= {"a_lp", "delta_lp", "fwt", "bwt", "forgetting"}
    # a_lp is the mean over experiences of the probe accuracy on the task just trained
    assert final["a_lp"] == pytest.approx((m["P"][1][0] + m["P"][2][1]) / 2)
    # Δ_LP after experience 2: only the probe is untrained
    assert disk["metrics"]["per_experience"][1]["delta_lp"] == pytest.approx(m["P"][2][2] - m["P"][0][2])
    assert disk["metrics"]["final"]["bwt"] == pytest.approx(m["R"][1][0] - m["R"][0][0])
    assert {(d["experience"], d["dataset"]) for d in disk["distances"]} == {
        (t, c) for t in (1, 2) for c in m["P_columns"]}
    assert all(d["otdd"] >= 0 and d["l2"] >= 0 and d["n"] <= 45 for d in disk["distances"])
    assert len(disk["timing"]["per_experience"]) == 2
    # each named stage ran as often as the run's shape says: 3 evaluations (pre-trained and
    # after each experience) of 3 datasets, features of the probe's train and test splits
    st = disk["timing"]["stages"]
    steps = sum(e["steps"] for e in disk["timing"]["per_experience"])
    assert {k: v["calls"] for k, v in st.items()} == {
        "model_build": 1, "data_build": 1, "data_wait": steps, "heads_eval": 2,
        "eval_features": 3 * 3 * 2, "probe_fit": 3 * 3, "distances": 2 * 3, "checkpoint": 2}
    assert all(v["s"] >= 0 for v in st.values()) and disk["timing"]["stages_synchronised"] is False
    assert not (tmp_path / "checkpoints" / cfg.id).exists()  # removed once complete
    assert rec["metrics"] == disk["metrics"]
    # the record round-trips through JSON and the results reader
    records, problems = read_results(tmp_path)
    assert problems == [] and [r.id for r in records] == [cfg.id]
    assert json.loads(json.dumps(disk)) == disk


@pytest.mark.slow
def test_complete_run_is_skipped_and_overwrite_redoes_it(tmp_path, tiny_weights):
    cfg = from_dict(small_config_dict(str(tmp_path), tiny_weights))
    run(cfg)
    before = record_path(cfg).read_bytes()
    events = []
    rec = run(cfg, on_event=events.append)
    assert rec["skipped"] and any("skipped" in e for e in events)
    assert record_path(cfg).read_bytes() == before
    rec = run(cfg, overwrite=True)
    assert not rec.get("skipped") and read_record(record_path(cfg))["status"] == "complete"


@pytest.mark.slow
def test_failed_run_is_recorded_and_never_replaces_a_complete_record(tmp_path, tiny_weights):
    d = small_config_dict(str(tmp_path), tiny_weights)
    d["benchmark"]["experiences"] = ["mnist"]
    d["benchmark"]["root"] = str(tmp_path / "no-data")
    cfg = from_dict(d)
    with pytest.raises(Exception):
        run(cfg)
    failed = read_record(record_path(cfg))
    assert failed["status"] == "failed" and "mnist" in failed["error"]
    # a complete record at the same path survives a failing --overwrite
    good = from_dict(small_config_dict(str(tmp_path), tiny_weights))
    run(good)
    before = record_path(good).read_bytes()

    import proxyfda_cl.run.runner as session

    def boom(self):
        raise RuntimeError("disk on fire")

    orig = session.Session.run
    session.Session.run = boom
    try:
        with pytest.raises(RuntimeError):
            run(good, overwrite=True)
    finally:
        session.Session.run = orig
    assert record_path(good).read_bytes() == before


@pytest.mark.slow
def test_a_run_whose_batch_lowered_k_records_the_warning(tmp_path, tiny_weights):
    d = small_config_dict(str(tmp_path), tiny_weights, strategy="fda")
    d["train"].update(sampler="random", batch_size=30)  # 96 samples: batches of 30, 30, 30, 6
    rec = run(from_dict(d))
    lowered = [w for w in rec["warnings"] if "k=8 lowered to 4 for minibatches of 6" in w]
    assert [w.split(":")[0] for w in lowered] == ["experience 1", "experience 2"], rec["warnings"]
    assert read_record(record_path(from_dict(d)))["warnings"] == rec["warnings"]
    # a full batch every step: nothing to record
    d["train"].update(batch_size=32)
    assert not [w for w in run(from_dict(d))["warnings"] if "lowered" in w]
