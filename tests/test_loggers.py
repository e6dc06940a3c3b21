"""Loggers from the config: files written, read back; the run id unchanged; missing extras."""
import csv
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from proxyfda_cl.cli import main
from proxyfda_cl.config import check_loggers, from_dict, make_config
from proxyfda_cl.training.loggers import (RunLoggers, _step_metric, TaskLossProbe,
                                 log_dir, regularizer_values)
from proxyfda_cl.core.typed_record import read_results
from tests.conftest import small_config_dict


def _read_metrics_csv(path: Path) -> dict:
    series: dict = {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "step", "value"]
    for name, step, value in rows[1:]:
        series.setdefault(name, []).append((int(step), float(value)))
    return series


def _read_events(folder: Path) -> dict:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_run_with_csv_and_tensorboard_logs_the_fda_term(tmp_path, tiny_weights, capsys):
    """``run --set loggers=[csv,tensorboard]``: CSV and event files, FDA term per step."""
    cfg = small_config_dict(str(tmp_path / "res"), tiny_weights, strategy="fda")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(path), "--set", "loggers=[csv,tensorboard]"]) == 0
    capsys.readouterr()
    (record,), problems = read_results(tmp_path / "res")
    rec = record.raw
    assert not problems
    run = from_dict(cfg)
    assert rec["id"] == run.id  # loggers leave the id alone
    folder = log_dir(run)
    assert folder.name == f"tiny-test__fda__seed0__{run.id}"
    steps = sum(e["steps"] for e in rec["timing"]["per_experience"])

    events = _read_events(folder)
    fda = events["train/fda"]
    assert [s for s, _ in fda] == list(range(steps))  # one point per training step
    assert all(math.isfinite(v) and v >= 0 for _, v in fda)
    assert len(events["train/task_loss"]) == steps
    delta = [v for _, v in events["record/delta_lp"]]
    want = [e["delta_lp"] for e in rec["metrics"]["per_experience"]]
    assert delta == pytest.approx(want, abs=1e-6)
    p_col = rec["matrices"]["P_columns"][-1]
    assert [s for s, _ in events[f"record/P/{p_col}"]] == [1, 2]

    series = _read_metrics_csv(folder / "metrics.csv")
    assert [v for _, v in series["train/fda"]] == pytest.approx([v for _, v in fda], rel=1e-6)
    assert [v for _, v in series[f"record/P/{p_col}"]] == pytest.approx(
        [row[-1] for row in rec["matrices"]["P"][1:]])
    d = rec["distances"][-1]
    assert series[f"record/otdd/{d['dataset']}"][-1][1] == pytest.approx(d["otdd"])
    with open(folder / "training_results.csv") as f:  # Avalanche's own CSV, one row per epoch
        train_rows = list(csv.DictReader(f))
    assert len(train_rows) == 2 and float(train_rows[0]["training_loss"]) > 0


@pytest.mark.slow
def test_wandb_runs_offline_into_the_run_folder(tmp_path, tiny_weights, monkeypatch):
    from proxyfda_cl.run.runner import run

    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    d = small_config_dict(str(tmp_path / "res"), tiny_weights, strategy="ldifs")
    d["loggers"] = ["wandb"]
    cfg = from_dict(d)
    run(cfg)
    runs = list((log_dir(cfg) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    blob = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"train/ldifs" in blob and b"record/delta_lp" in blob


def test_loggers_do_not_change_the_run_id():
    plain = make_config(None, [])
    logged = make_config(None, ["loggers=[csv,tensorboard,text]"])
    assert logged.loggers == ["csv", "tensorboard", "text"]
    assert plain.loggers == ["interactive"] and plain.id == logged.id


def test_sweep_runs_get_their_own_log_folders(tmp_path):
    from proxyfda_cl.run.sweep import SweepConfig, expand

    suite = SweepConfig(name="t", base={"benchmark": "demo"}, strategies=["naive", "fda"],
                        benchmarks=["demo"], seeds=[0, 1])
    runs = expand(suite, out=str(tmp_path), sets=["loggers=[csv]"])
    names = {log_dir(c).name for c in runs}
    assert len(names) == 4
    for c in runs:
        assert log_dir(c).name.startswith(f"demo__{c.strategy.name}__seed{c.seed}__")


@pytest.mark.parametrize("argv, needles", [
    (["--set", "loggers=[csv,nope]"], ["loggers", "'nope'", "tensorboard"]),
    (["--set", "loggers=[csv,csv]"], ["loggers", "twice"]),
])
def test_bad_logger_names(argv, needles, capsys, tmp_path):
    code = main(["run", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(n in err for n in needles), err


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_missing_extra_is_one_line_naming_it(name, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    code = main(["run", "--out", str(tmp_path), "--set", f"loggers=[{name}]"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"proxyfda-cl[{name}]" in err and "loggers" in err
    assert not list(tmp_path.rglob("*.json"))


def test_no_logger_means_the_minimal_evaluator(tmp_path):
    cfg = make_config(None, [f"out={tmp_path}"])  # default [interactive]
    logs = RunLoggers(cfg, interactive=False, resumed=False)  # a sweep worker
    assert logs.loggers == [] and logs.plugins == []
    assert len(logs.metrics()) == 1  # experience accuracy only: nothing read per step
    assert logs.log_experience(1, {}, [], [], 0) is None
    assert not (tmp_path / "logs").exists()


def test_regularizer_values_are_read_not_set():
    from proxyfda_cl.strategies import FDAPlugin, L2SPPlugin, LDIFSPlugin, ProxyFDAPlugin

    fda, proxy, ldifs, l2sp = FDAPlugin(), ProxyFDAPlugin(), LDIFSPlugin(), L2SPPlugin()
    fda.last_loss, ldifs.last_loss = torch.tensor(0.5), torch.tensor(2.0)
    proxy.last_loss, proxy.last_proxy_loss = torch.tensor(0.25), torch.tensor(3.0)
    vals = regularizer_values([fda, proxy, ldifs, l2sp, object()])
    assert [n for n, _ in vals] == ["fda", "fda", "proxy", "ldifs", "l2sp"]
    assert vals[-1][1] is None and float(vals[2][1]) == 3.0


def test_step_metric_skips_values_a_plugin_did_not_renew():
    from proxyfda_cl.strategies import FDAPlugin

    probe, fda = TaskLossProbe(), FDAPlugin()
    metric = _step_metric(probe)
    strategy = types.SimpleNamespace(plugins=[probe, fda], loss=torch.tensor(1.5),
                                     clock=types.SimpleNamespace(train_iterations=0))
    probe.before_training_iteration(strategy)
    probe.before_backward(strategy)
    fda.last_loss = torch.tensor(0.75)
    out = metric.after_training_iteration(strategy)
    assert {m.name: m.value for m in out} == {"train/task_loss": 1.5, "train/fda": 0.75}
    strategy.clock.train_iterations = 1
    probe.before_training_iteration(strategy)
    probe.before_backward(strategy)  # FDA skipped this batch: its last value is stale
    out = metric.after_training_iteration(strategy)
    assert [(m.name, m.x_plot) for m in out] == [("train/task_loss", 1)]


def test_resumed_csv_keeps_the_earlier_lines(tmp_path):
    cfg = make_config(None, [f"out={tmp_path}", "loggers=[csv,text]"])
    state = {"R": [[0.5, None], [0.4, 0.6]], "P": [[0.2, 0.3, 0.4], [0.5, 0.3, 0.35],
                                                     [0.45, 0.7, 0.3]],
             "distances": [{"experience": 1, "dataset": "b", "l2": 0.1, "otdd": 0.2,
                            "knn_overlap": 0.8}]}
    cols, tasks = ["a", "b", "p"], ["a", "b"]
    first = RunLoggers(cfg, interactive=False, resumed=False)
    values = first.log_experience(1, state, cols, tasks, 10)
    first.close()
    assert values["record/knn_overlap/b"] == 0.8 and values["record/P/p"] == 0.35
    assert values["record/delta_lp"] == pytest.approx(((0.3 - 0.3) + (0.35 - 0.4)) / 2)
    second = RunLoggers(cfg, interactive=False, resumed=True)
    second.log_experience(2, state, cols, tasks, 20)
    second.close()
    series = _read_metrics_csv(log_dir(cfg) / "metrics.csv")
    assert [s for s, _ in series["record/P/p"]] == [1, 2]
    text = (log_dir(cfg) / "log.txt").read_text()
    assert "after experience 1" in text and "after experience 2" in text
    fresh = RunLoggers(cfg, interactive=False, resumed=False)  # a fresh start clears them
    fresh.close()
    assert "record/P/p" not in _read_metrics_csv(log_dir(cfg) / "metrics.csv")


def test_check_loggers_accepts_every_name():
    assert check_loggers(["interactive", "text", "csv", "tensorboard", "wandb"])
