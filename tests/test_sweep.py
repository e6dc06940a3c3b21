"""Sweeps: grid expansion, stable run ids, skip-existing, failed runs, a killed sweep that
resumes without losing or duplicating anything, the Ray engine, atomic record writes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from proxyfda_cl.cli import main
from proxyfda_cl.config import from_dict, to_dict
from proxyfda_cl.core.errors import ConfigError
from proxyfda_cl.core.record import read_record, write_json_atomic
from proxyfda_cl.run.runner import checkpoint_dir, record_path, run
from proxyfda_cl.run.sweep import expand, load_suite, record_crash, run_sweep
from tests.conftest import small_config_dict

REPO = Path(__file__).resolve().parents[1]


def _suite(tmp_path, weights, name="s", **axes) -> Path:
    """A suite YAML over the tiny two-experience config."""
    base = small_config_dict("unused", weights)
    for key in ("out", "seed", "strategy"):
        base.pop(key)
    data = {"name": name, "base": base, "strategies": ["naive"], "seeds": [0], **axes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _snapshot(folder: Path) -> dict:
    """Bytes and mtime of every record file in ``folder``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.json"))}


def test_grid_expansion_order_overrides_and_dedup(tmp_path, tiny_weights):
    other = {"name": "other", "experiences": ["digits[0:4]"],
             "overrides": {"train.epochs": 3, "train.lr": 0.5}}
    path = _suite(tmp_path, tiny_weights, strategies=["naive", {"name": "fda", "k": 4}],
                  benchmarks=["tiny-test", other], seeds=[0, 1],
                  overrides=[{}, {"train.lr": 0.05}, {}])
    runs = expand(load_suite(str(path)), out=str(tmp_path / "res"))
    assert len(runs) == 2 * 2 * 2 * 2  # the repeated {} override is one run, not two
    assert len({r.id for r in runs}) == len(runs)
    got = [(r.strategy.name, r.benchmark.name, r.seed, r.train.lr) for r in runs]
    expected = [(s, b, seed, lr) for s in ("naive", "fda") for b in ("tiny-test", "other")
                for seed in (0, 1)
                for lr in ((0.01, 0.05) if b == "tiny-test" else (0.5, 0.05))]
    assert got == expected  # strategies x benchmarks x seeds x overrides, in that order
    for r in runs:
        assert r.out == str(tmp_path / "res")
        if r.strategy.name == "fda":  # the suite's k, the other parameters at their defaults
            assert r.strategy.params["k"] == 4 and r.strategy.params["lam"] == 3.0
        else:
            assert r.strategy.params == {}
        if r.benchmark.name == "other":  # its own overrides, under the grid's
            assert r.train.epochs == 3 and r.benchmark.experiences == ["digits[0:4]"]
            assert r.benchmark.probes == ["concept:colour[0:3]"]  # the rest from base
        else:
            assert r.train.epochs == 1
            assert r.benchmark.experiences == ["concept:shape[0:3]", "digits[0:4]"]
    assert sorted({r.seed for r in expand(load_suite(str(path), seeds=3), out="x")}) == [0, 1, 2]


@pytest.mark.slow
def test_run_ids_are_stable_and_follow_the_complete_config(tmp_path, tiny_weights):
    path = _suite(tmp_path, tiny_weights, strategies=["naive", "fda"], seeds=[0, 1])
    ids = [r.id for r in expand(load_suite(str(path)), out=str(tmp_path / "a"))]
    code = ("import json, sys; from proxyfda_cl.run.sweep import expand, load_suite; "
            "print(json.dumps([r.id for r in expand(load_suite(sys.argv[1]), out=sys.argv[2])]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "b")], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ids  # another process, another folder
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    # a default spelled out is the same complete config; a changed hyper-parameter is not
    same = [r.id for r in expand(load_suite(str(path)), out="x", sets=["train.momentum=0.9"])]
    assert same == ids
    for change in ("train.lr=0.02", "eval.otdd_max_n=44", "benchmark.train_size=95"):
        changed = [r.id for r in expand(load_suite(str(path)), out="x", sets=[change])]
        assert not set(changed) & set(ids), change
    cfg = from_dict({**small_config_dict("x", tiny_weights), "strategy": {"name": "fda", "k": 4}})
    assert cfg.id != from_dict({**to_dict(cfg), "strategy": {"name": "fda", "k": 5}}).id


@pytest.mark.slow
def test_failed_runs_are_recorded_skipped_and_retried_on_request(tmp_path, tiny_weights):
    missing = tmp_path / "later" / "tiny.pt"
    crash = tmp_path / "crash.py"
    crash.write_text("import os, signal\n\ndef die():\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    path = _suite(tmp_path, tiny_weights, overrides=[
        {}, {"backbone.weights": str(missing)},
        {"backbone.name": f"torch:{crash}:die", "backbone.weights": None}])
    runs = expand(load_suite(str(path)), out=str(tmp_path / "res"))
    good, bad, killed = runs
    events = []
    out = run_sweep(runs, workers=1, progress=False, on_event=events.append)
    assert out["counts"] == {"complete": 1, "failed": 2}
    assert [r["status"] for r in out["results"]] == ["complete", "failed", "failed"]
    assert read_record(record_path(good))["status"] == "complete"
    rec = read_record(record_path(bad))
    assert rec["status"] == "failed" and str(missing) in rec["error"] and rec["id"] == bad.id
    rec = read_record(record_path(killed))  # its worker died: the sweep records it and goes on
    assert rec["status"] == "failed" and "WorkerDied" in rec["error"]
    assert sum(e.startswith("failed:") for e in events) == 2

    before = _snapshot(tmp_path / "res" / "records")
    events = []
    out = run_sweep(runs, workers=1, progress=False, on_event=events.append)
    assert out["counts"] == {"complete": 1, "failed": 2}
    assert all(r["skipped"] for r in out["results"])
    assert any("--retry-failed" in e for e in events)
    assert _snapshot(tmp_path / "res" / "records") == before  # not rewritten, not touched

    missing.parent.mkdir()
    shutil.copy(tiny_weights, missing)  # the cause of the failure is fixed
    out = run_sweep(runs, workers=1, progress=False, retry_failed=True)
    assert [r["status"] for r in out["results"]] == ["complete", "complete", "failed"]
    assert read_record(record_path(bad))["status"] == "complete"
    after = _snapshot(tmp_path / "res" / "records")
    name = record_path(good).name
    assert after[name] == before[name]  # the complete run was not redone


def test_record_crash_never_replaces_a_complete_record(tmp_path, tiny_weights):
    cfg = from_dict(small_config_dict(str(tmp_path), tiny_weights))
    res = record_crash(to_dict(cfg), "WorkerDied: x")
    assert res["status"] == "failed" and read_record(record_path(cfg))["error"] == "WorkerDied: x"
    write_json_atomic(record_path(cfg), {"id": cfg.id, "status": "complete", "config": {},
                                         "matrices": {}, "metrics": {}})
    before = record_path(cfg).read_bytes()
    assert record_crash(to_dict(cfg), "WorkerDied: y")["status"] == "complete"
    assert record_path(cfg).read_bytes() == before


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
        except (OSError, ValueError):
            continue
        if d.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path, tiny_weights):
    path = _suite(tmp_path, tiny_weights, seeds=[0, 1, 2])
    res = tmp_path / "res"
    runs = expand(load_suite(str(path)), out=str(res))
    cmd = [sys.executable, "-m", "proxyfda_cl.cli", "sweep", str(path), "--workers", "1",
           "--results", str(res)]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline, mid = time.time() + 150, None
    try:
        while mid is None:
            assert proc.poll() is None, "the sweep finished before it could be killed"
            assert time.time() < deadline, "the sweep made no progress"
            done = [c for c in runs if record_path(c).exists()]
            mid = next((c for c in runs if c not in done
                        and (checkpoint_dir(c) / "last.pt").exists()), None) if done else None
            time.sleep(0.005)
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert kids, "the sweep had no worker process"
    deadline = time.time() + 20
    while any(_alive(k) for k in kids) and time.time() < deadline:
        time.sleep(0.05)
    orphans = [k for k in kids if _alive(k)]
    for k in orphans:
        os.kill(k, signal.SIGKILL)
    assert not orphans, "worker processes outlived the killed sweep"
    finished = [c for c in runs if record_path(c).exists()]
    assert mid not in finished and all(read_record(record_path(c))["status"] == "complete"
                                       for c in finished)
    before = _snapshot(res / "records")

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stdout + again.stderr
    records = sorted((res / "records").glob("*.json"))
    assert sorted(p.name for p in records) == sorted(record_path(c).name for c in runs)
    assert all(read_record(p)["status"] == "complete" for p in records)
    after = _snapshot(res / "records")
    assert all(after[name] == snap for name, snap in before.items())  # not re-run
    assert f"resumed from its checkpoint: {record_path(mid)}" in again.stdout
    assert not any(checkpoint_dir(c).exists() for c in runs)
    # resumed in another process, the run ends exactly where an uninterrupted one does
    ref = run(from_dict({**to_dict(mid), "out": str(tmp_path / "ref")}))
    got = read_record(record_path(mid))
    assert got["metrics"] == ref["metrics"] and got["matrices"] == ref["matrices"]


@pytest.mark.slow
def test_ray_engine_runs_each_config_as_a_task(tmp_path, tiny_weights):
    ray = pytest.importorskip("ray")
    path = _suite(tmp_path, tiny_weights, seeds=[0, 1])
    runs = expand(load_suite(str(path)), out=str(tmp_path / "res"))
    events = []
    out = run_sweep(runs, engine="ray", workers=2, progress=False, on_event=events.append)
    assert not ray.is_initialized()  # the local instance it started is shut down
    assert out["counts"] == {"complete": 2, "failed": 0}, events
    for cfg in runs:
        rec = read_record(record_path(cfg))
        assert rec["status"] == "complete" and rec["id"] == cfg.id
        assert len(rec["matrices"]["R"]) == 2


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    runs = expand(load_suite(str(_suite(tmp_path, tiny_weights))), out=str(tmp_path / "res"))
    with pytest.raises(ConfigError, match=r"proxyfda-cl\[ray\]"):
        run_sweep(runs, engine="ray", progress=False)
    assert not list(tmp_path.rglob("*.json"))


def _writer_code(path: str, writer: int, n: int) -> str:
    return (f"from proxyfda_cl.core.record import write_json_atomic\n"
            f"for i in range({n}):\n"
            f"    write_json_atomic({path!r}, {{'w': {writer}, 'i': i, "
            f"'blob': [{writer} * 1000 + i] * 20000}})\n")


@pytest.mark.slow
def test_concurrent_writers_never_expose_a_partial_record(tmp_path):
    path = tmp_path / "records" / "r.json"
    write_json_atomic(path, {"w": -1, "i": 0, "blob": [-1000] * 20000})
    procs = [subprocess.Popen([sys.executable, "-c", _writer_code(str(path), w, 60)], cwd=REPO)
             for w in (1, 2)]

    def write(w):
        for i in range(60):
            write_json_atomic(path, {"w": w, "i": i, "blob": [w * 1000 + i] * 20000})

    threads = [threading.Thread(target=write, args=(w,)) for w in (3, 4)]
    for t in threads:
        t.start()
    reads, bad, seen = 0, [], set()
    while any(p.poll() is None for p in procs) or any(t.is_alive() for t in threads) or reads < 50:
        with open(path) as f:
            text = f.read()
        reads += 1
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            bad.append(len(text))
            continue
        seen.add(rec["w"])
        if rec["blob"] != [rec["w"] * 1000 + rec["i"]] * 20000:
            bad.append(rec["w"])
    for t in threads:
        t.join()
    assert [p.wait() for p in procs] == [0, 0]
    assert not bad, f"{len(bad)} of {reads} reads saw a partial or mixed record"
    assert len(seen) >= 2  # the reader did see the writers at work
    assert json.loads(path.read_text())["i"] in (59,)
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp files left


@pytest.mark.parametrize("body, needles", [
    ({"strategies": ["naive"], "typo_seeds": [0]}, ["typo_seeds", "unknown field", "seeds"]),
    ({"strategies": []}, ["strategies", "empty"]),
    ({"seeds": []}, ["seeds", "empty"]),
    ({"strategies": ["nope"]}, ["strategy.name", "nope", "naive"]),
    ({"strategies": "naive"}, ["strategies", "list"]),
])
def test_bad_suite_gives_one_line_and_exit_2(body, needles, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "base": {"device": "cpu"}, **body}))
    code = main(["sweep", str(path), "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (tmp_path / "res").exists()  # nothing written
