"""Real-model paths without a network: a user ``torch:`` encoder end to end, the offline
open_clip error through the CLI, bf16 autocast on CPU, and the packaged suites."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from proxyfda_cl.config import from_dict, to_dict
from proxyfda_cl.core.record import read_record
from proxyfda_cl.core.typed_record import read_results
from proxyfda_cl.run.runner import preflight, record_path, run
from proxyfda_cl.run.sweep import SUITES_DIR, expand, load_suite
from tests.conftest import small_config_dict

USER_MODULE = '''
import torch
from torch import nn

CALLS = []  # (training, autocast on, conv1 output dtype) of every forward pass
FAIL = False  # when set, every training forward pass raises


class SmallCNN(nn.Module):
    """[B, 3, 16, 16] -> [B, 24]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, 24)
        self.ldifs_layers = {"conv1": 1, "conv2": 1}

    def forward(self, x):
        assert tuple(x.shape[1:]) == (3, 16, 16), tuple(x.shape)
        if FAIL and self.training and torch.is_grad_enabled():
            raise ValueError("forward failed on purpose")
        h = torch.relu(self.conv1(x))
        CALLS.append((self.training, torch.is_autocast_enabled("cpu"), h.dtype))
        h = torch.relu(self.conv2(h))
        return self.fc(self.pool(h).flatten(1))


def factory():
    return SmallCNN()
'''


@pytest.fixture
def user_module(tmp_path) -> Path:
    path = tmp_path / "small_cnn.py"
    path.write_text(USER_MODULE)
    return path


def _torch_config(tmp_path, weights, module: Path, strategy: str, **train) -> dict:
    d = small_config_dict(str(tmp_path / "res"), weights, strategy=strategy)
    d["backbone"] = {"name": f"torch:{module}:factory", "input_size": 16}
    d["train"].update(train)
    return d


def _check_record(cfg, rec: dict) -> None:
    disk = read_record(record_path(cfg))
    assert disk["status"] == "complete" and disk["id"] == cfg.id == rec["id"]
    assert disk["config"]["backbone"]["name"] == cfg.backbone.name
    m = disk["matrices"]
    assert m["R_columns"] == ["concept:shape[0:3]", "digits[0:4]"]
    assert m["P_columns"] == ["concept:shape[0:3]", "digits[0:4]", "concept:colour[0:3]"]
    assert [len(r) for r in m["R"]] == [2, 2] and [len(r) for r in m["P"]] == [3, 3, 3]
    assert all(0.0 <= v <= 1.0 for row in m["P"] for v in row)
    assert m["R"][0][1] is None  # task 2 not yet trained after experience 1
    assert all(0.0 <= m["R"][t][j] <= 1.0 for t in range(2) for j in range(t + 1))
    final = disk["metrics"]["final"]
    assert final["a_lp"] == pytest.approx((m["P"][1][0] + m["P"][2][1]) / 2)
    assert final["bwt"] == pytest.approx(m["R"][1][0] - m["R"][0][0])
    assert len(disk["metrics"]["per_experience"]) == 2
    assert {(d["experience"], d["dataset"]) for d in disk["distances"]} == {
        (t, c) for t in (1, 2) for c in m["P_columns"]}
    assert len(disk["timing"]["per_experience"]) == 2


@pytest.mark.slow
def test_torch_user_module_runs_a_stream_with_ldifs_on_its_layers(tmp_path, tiny_weights,
                                                                  user_module, monkeypatch):
    import proxyfda_cl.strategies.ldifs as ldifs_mod

    seen = []
    real = ldifs_mod.ldifs_loss

    def spy(student, teacher, dims):
        seen.append(([tuple(s.shape) for s in student], [tuple(t.shape) for t in teacher],
                     list(dims)))
        return real(student, teacher, dims)

    monkeypatch.setattr(ldifs_mod, "ldifs_loss", spy)
    cfg = from_dict(_torch_config(tmp_path, tiny_weights, user_module, "ldifs"))
    rec = run(cfg)
    _check_record(cfg, rec)
    steps = sum(e["steps"] for e in rec["timing"]["per_experience"])
    assert steps > 0 and len(seen) == steps  # the penalty was added at every training step
    for s_shapes, t_shapes, dims in seen:
        b = s_shapes[0][0]
        # conv1 [B,8,16,16], conv2 [B,16,8,8] (channel dim 1), then the [B,24] embedding
        assert s_shapes == t_shapes == [(b, 8, 16, 16), (b, 16, 8, 8), (b, 24)]
        assert dims == [1, 1, 1]


@pytest.mark.slow
def test_torch_user_module_runs_naive(tmp_path, tiny_weights, user_module):
    cfg = from_dict(_torch_config(tmp_path, tiny_weights, user_module, "naive"))
    _check_record(cfg, run(cfg))
    records, problems = read_results(tmp_path / "res")
    assert problems == [] and [r.id for r in records] == [cfg.id]


@pytest.mark.slow
def test_bf16_precision_on_cpu(tmp_path, tiny_weights, user_module):
    from proxyfda_cl.models.custom import import_user_module

    cfg = from_dict(_torch_config(tmp_path, tiny_weights, user_module, "fda", precision="bf16"))
    assert cfg.train.precision == "bf16"
    calls = import_user_module(str(user_module)).CALLS
    calls.clear()
    _check_record(cfg, run(cfg))
    train_calls = [c for c in calls if c[0]]
    assert train_calls and all(on and dtype == torch.bfloat16 for _, on, dtype in train_calls)


@pytest.mark.slow
def test_a_run_failing_under_bf16_leaves_autocast_off(tmp_path, tiny_weights, user_module):
    """A failure inside a bf16 forward pass must not leave autocast on for the next run."""
    from proxyfda_cl.models.custom import import_user_module

    module = import_user_module(str(user_module))
    cfg = from_dict(_torch_config(tmp_path, tiny_weights, user_module, "naive", precision="bf16"))
    module.FAIL = True
    try:
        with pytest.raises(ValueError, match="on purpose"):
            run(cfg)
        leaked = torch.is_autocast_enabled("cpu")
    finally:
        module.FAIL = False
        while torch.is_autocast_enabled("cpu"):  # never leak into the tests that follow
            torch.set_autocast_enabled("cpu", False)
    assert not leaked
    assert read_record(record_path(cfg))["status"] == "failed"


def _offline_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               PROXYFDA_CL_CACHE=str(tmp_path / "cache"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    return env


@pytest.mark.slow
def test_openclip_offline_cli_error_is_one_line_exit_2(tmp_path):
    (tmp_path / "hf").mkdir()
    cmd = [sys.executable, "-m", "proxyfda_cl.cli"]
    r = subprocess.run(cmd + ["run", "--backbone", "openclip:ViT-B-32/openai", "--out",
                              str(tmp_path / "out")], capture_output=True, text=True,
                       env=_offline_env(tmp_path), timeout=180)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: backbone openclip:ViT-B-32/openai")
    assert "backbone.weights" in lines[0] and "open_clip_pytorch_model.bin" in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    # the failed run is recorded, with the same one-line reason and no traceback
    records, _ = read_results(tmp_path / "out", include_failed=True)
    assert [rec.status for rec in records] == ["failed"]
    assert "WeightsError" in records[0].error and records[0].raw["traceback"] == ""


def test_openclip_offline_error_path_is_fast(tmp_path, monkeypatch):
    """From the factory call to the error in under 5 s (imports done beforehand)."""
    import huggingface_hub.constants as hc
    import open_clip  # noqa: F401  (import time is not the error path)

    from proxyfda_cl.config import BackboneConfig
    from proxyfda_cl.core.errors import WeightsError
    from proxyfda_cl.models import build_encoder

    for k, v in _offline_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="not found offline") as e:
        build_encoder(BackboneConfig(name="openclip:ViT-B-32/openai"))
    assert time.perf_counter() - t0 < 5.0
    assert "\n" not in str(e.value)


# --- packaged suites ------------------------------------------------------------------

PAPER = ["stanford_cars", "cifar10", "cifar100", "dtd", "eurosat", "gtsrb", "mnist",
         "imagefolder:resisc45", "svhn", "imagefolder:imagenet"]
# train_utils.py `epochs` of the LDIFS public code
LDIFS_EPOCHS = {"stanford_cars": 35, "cifar10": 10, "cifar100": 10, "dtd": 76, "eurosat": 12,
                "gtsrb": 11, "mnist": 10, "imagefolder:resisc45": 15, "svhn": 10,
                "imagefolder:imagenet": 10}
STRATEGIES = {"naive", "lp_ft", "l2sp", "ldifs", "ewc", "lwf", "fda", "proxy_fda"}


@pytest.mark.parametrize("path", sorted(SUITES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_packaged_suite_expands_to_valid_runs(path, tmp_path):
    from proxyfda_cl.benchmarks import resolve

    runs = expand(load_suite(path.stem), out=str(tmp_path))
    assert runs and len({r.id for r in runs}) == len(runs)
    for cfg in runs:
        preflight(cfg)  # strategy (and its params), backbone prefix and dataset names exist
        names = sum(resolve(cfg.benchmark), [])
        assert len(set(names)) == len(names)  # build_stream refuses a dataset listed twice
        assert from_dict(to_dict(cfg)).id == cfg.id  # the record's config rebuilds the run


def test_paper_clip_is_table_1_with_ldifs_hyper_parameters(tmp_path):
    runs = expand(load_suite("paper-clip"), out=str(tmp_path))
    assert len(runs) == 10 * 8
    assert {r.strategy.name for r in runs} == STRATEGIES
    by_bench: dict = {}
    for cfg in runs:
        by_bench.setdefault(cfg.benchmark.name, []).append(cfg)
        b, t = cfg.benchmark, cfg.train
        assert len(b.experiences) == 1 and len(b.probes) == 9
        assert sorted(b.experiences + b.probes) == sorted(PAPER)
        assert t.epochs == LDIFS_EPOCHS[b.experiences[0]]
        assert (t.optimizer, t.lr, t.weight_decay, t.batch_size) == ("adamw", 1e-5, 0.1, 128)
        assert (t.warmup_steps, t.schedule, t.grad_clip) == (500, "cosine", 1.0)
        assert t.classes_per_batch * t.samples_per_class == t.batch_size
        assert cfg.backbone.name == "openclip:ViT-B-32/openai" and cfg.seed == 0
    assert len(by_bench) == 10 and all(len(v) == 8 for v in by_bench.values())
    experiences = [v[0].benchmark.experiences[0] for v in by_bench.values()]
    probes = [p for v in by_bench.values() for p in v[0].benchmark.probes]
    assert sorted(experiences) == sorted(PAPER)  # each dataset once as the experience
    assert all(probes.count(d) == 9 for d in PAPER)  # and nine times as a probe
    # --set still wins over the suite, e.g. to point at the data
    moved = expand(load_suite("paper-clip"), out=str(tmp_path),
                   sets=["benchmark.root=/data", "train.precision=fp32"])
    assert {(r.benchmark.root, r.train.precision) for r in moved} == {("/data", "fp32")}


def test_suite_image_folders_load_from_the_data_root(tmp_path, monkeypatch):
    """``imagefolder:resisc45`` in a suite is ``<benchmark.root>/resisc45``, whatever the cwd."""
    from PIL import Image

    from proxyfda_cl.benchmarks.streams import load_task

    names = {n for r in expand(load_suite("paper-clip"), out=str(tmp_path))
             for n in r.benchmark.experiences + r.benchmark.probes if n.startswith("imagefolder:")}
    assert names == {"imagefolder:resisc45", "imagefolder:imagenet"}
    root = tmp_path / "data"
    for i, cls in enumerate(["b_class", "a_class"]):
        (root / "resisc45" / cls).mkdir(parents=True)
        for j in range(5):
            Image.new("RGB", (4, 4), (40 * i, 10 * j, 0)).save(root / "resisc45" / cls / f"{j}.png")
    monkeypatch.chdir(tmp_path)  # no ./resisc45 here
    task = load_task("imagefolder:resisc45", root=str(root), download=False, seed=0, image_size=4)
    assert task.classes == ["a_class", "b_class"]
    assert len(task.train) + len(task.test) == 10 and len(task.test) == 2  # 80/20 per class


def test_stream_suites_have_disjoint_experiences_and_probes(tmp_path):
    from proxyfda_cl.benchmarks import resolve

    cont = expand(load_suite("continual-clip"), out=str(tmp_path))
    exps, probes = resolve(cont[0].benchmark)
    assert len(exps) == 5 and sorted(exps + probes) == sorted(PAPER)
    split = expand(load_suite("split-cifar100"), out=str(tmp_path))
    exps, probes = resolve(split[0].benchmark)
    assert exps == [f"cifar100[{i}:{i + 10}]" for i in range(0, 100, 10)] and probes == []
    assert all(r.train.warmup_steps < 350 for r in split)  # shorter than one experience
