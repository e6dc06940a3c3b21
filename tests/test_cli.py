"""The command line end to end: every bad input gives one line, exit code 2, no traceback."""
import os
import subprocess
import sys

import pytest

from proxyfda_cl.cli import main


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("argv, needles", [
    (["run", "--strategy", "nope"], ["strategy.name", "naive", "proxy_fda"]),
    (["run", "--benchmark", "nope"], ["benchmark.name", "demo"]),
    (["run", "--backbone", "nope:x"], ["backbone.name", "tiny", "openclip"]),
    (["run", "--set", "train.lr=abc"], ["train.lr", "number"]),
    (["run", "--seed", "-3"], ["seed", ">= 0"]),
    (["run", "--seed", "x"], ["--seed"]),
    (["run", "--set", "strategy.k=abc", "--strategy", "fda"], ["strategy.k"]),
    (["run", "--set", "strategy.bogus=1"], ["strategy.bogus", "naive"]),
    (["run", "--config", "/nonexistent/run.yaml"], ["/nonexistent/run.yaml", "not found"]),
    (["leaderboard", "/nonexistent/results"], ["/nonexistent/results", "does not exist"]),
    (["plot", "/nonexistent/results"], ["/nonexistent/results"]),
    (["sweep", "no-such-suite"], ["no-such-suite", "demo"]),
])
def test_bad_input(argv, needles, capsys, tmp_path):
    argv = argv + (["--out", str(tmp_path)] if argv[0] == "run" else [])
    code, _, err = _run(argv, capsys)
    _one_line_error(code, err, *needles)
    assert not list(tmp_path.rglob("*.json"))  # nothing written for a bad config


def test_unparsable_config(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    code, _, err = _run(["run", "--config", str(bad)], capsys)
    _one_line_error(code, err, str(bad), "YAML")


def test_unwritable_output(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _run(["run", "--out", str(blocker / "sub")], capsys)
    _one_line_error(code, err, "out", str(blocker / "sub"))


def test_list_shows_every_registry(capsys):
    code, out, _ = _run(["list"], capsys)
    assert code == 0
    for name in ["naive", "lp_ft", "l2sp", "ldifs", "ewc", "lwf", "fda", "proxy_fda", "demo",
                 "concept", "digits", "mnist", "imagefolder", "tiny", "openclip", "timm"]:
        assert name in out


@pytest.mark.slow
def test_run_and_leaderboard_through_the_installed_command(tmp_path, tiny_weights):
    """The console script runs a tiny config, then the leaderboard reads its record."""
    import yaml

    from tests.conftest import small_config_dict

    cfg = small_config_dict(str(tmp_path / "res"), tiny_weights)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "proxyfda_cl.cli"]
    r = subprocess.run(cmd + ["run", "--config", str(path), "--set", "train.epochs=1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "record:" in r.stdout and "final:" in r.stdout
    r2 = subprocess.run(cmd + ["run", "--config", str(path)], capture_output=True, text=True,
                        env=env, timeout=300)
    assert r2.returncode == 0 and "skipped" in r2.stdout
    r3 = subprocess.run(cmd + ["leaderboard", str(tmp_path / "res"), "--format", "csv"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert r3.returncode == 0 and "naive" in r3.stdout
    assert main(["correlation", str(tmp_path / "res"), "--n-boot", "50"]) == 0
    assert main(["plot", str(tmp_path / "res"), "--kind", "otdd", "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "otdd_vs_forgetting.png").stat().st_size > 0
    bad = subprocess.run(cmd + ["run", "--strategy", "nope", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_k_too_large_for_the_batch_is_a_config_error(capsys, tmp_path):
    code, _, err = _run(["run", "--strategy", "fda", "--set", "strategy.k=100",
                         "--out", str(tmp_path)], capsys)
    _one_line_error(code, err, "strategy.k", "k=100", "64")


@pytest.mark.slow
def test_python_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "proxyfda_cl", "list"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "proxy_fda" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "proxyfda_cl", "leaderboard", "/no/such/dir"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
