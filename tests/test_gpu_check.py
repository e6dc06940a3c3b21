"""``bench/gpu-check --cpu``: the device check at toy sizes, so that the script cannot rot
before a GPU comes (about a minute on 2 cores)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = ["naive", "ewc", "lwf", "lp_ft", "fda", "l2sp", "ldifs", "proxy_fda"]


@pytest.mark.slow
def test_gpu_check_cpu(tmp_path):
    out = tmp_path / "gc"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu-check"), "--cpu",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["ok"] and report["environment"]["mode"] == "cpu"
    assert report["seconds"] < 300

    tests = report["stages"]["tests"]
    assert tests["ok"] and tests["failed"] == 0
    assert tests["passed"] + tests["skipped"] >= 8  # the cuda-marked tests were collected
    assert all("test_cuda" in c["test"] or "cuda" in c["test"] for c in tests["cases"])

    over = report["stages"]["overhead"]
    assert over["ok"] and set(STRATEGIES) <= set(over["strategies"])
    assert {"fda+cache", "proxy_fda+cache"} <= set(over["strategies"])
    assert over["strategies"]["naive"]["ratio"] == 1.0
    for row in over["strategies"].values():
        assert row["median_step_s"] > 0 and row["images_per_s"] > 0
    assert over["settings"]["precision"] == "bf16" and over["teacher_forward_s"] > 0
    assert set(over["vs_floor"]) == {"fda", "proxy_fda", "ldifs"}

    run = report["stages"]["run"]
    assert run["ok"] and run["status"] == "complete"
    assert len(run["per_experience"]) == 2 and len(run["P"]) == 3
    st = run["stages"]
    for key in ("model_build_s", "data_build_s", "train_s", "teacher_s", "hard_mining_s",
                "eval_s", "eval_features_s", "probe_fit_s", "distances_s", "checkpoint_s",
                "data_wait_s", "heads_eval_s"):
        assert st[key] is not None and st[key] >= 0, key
    assert st["teacher_s"] > 0 and st["hard_mining_s"] > 0 and st["distances_s"] > 0
    # the stage times are the run's own record (no wrappers): each stage ran as often as the
    # run's shape says
    calls = run["calls"]
    assert calls["hard_mining"] == 2 and calls["checkpoint"] == 2 and calls["heads_eval"] == 2
    assert calls["teacher"] == sum(p["steps"] for p in run["per_experience"])
    assert calls["data_wait"] == sum(p["steps"] for p in run["per_experience"])
    assert run["config"]["train"]["precision"] == "bf16"
    assert run["config"]["backbone"]["weights"] == "random"

    md = (out / "gpu-check.md").read_text()
    for heading in ("bench/gpu-check", "CUDA tests", "Overhead", "Run", "| proxy_fda |"):
        assert heading in md
