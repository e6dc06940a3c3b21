"""The CUDA paths: bf16 autocast training, pinned-memory loaders with workers, the GPU probe,
Sinkhorn OTDD on the GPU, the teacher cache and step timer on the GPU, and resume across
devices. Marked ``cuda`` (``pytest -m cuda``); every test skips without a CUDA device.
``bench/gpu-check`` runs them first."""
import numpy as np
import pytest
import torch

from proxyfda_cl.config import from_dict
from proxyfda_cl.core.record import read_record
from proxyfda_cl.run.runner import checkpoint_dir, record_path, run
from tests.conftest import small_config_dict
from tests.test_resume import Interrupt, _trained_experiences

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
DEV = "cuda"


def _cfg(out, *, strategy="naive", device=DEV, **train):
    d = small_config_dict(str(out), "random", strategy=strategy)
    d["device"] = device
    d["train"].update(train)
    return from_dict(d)


# --- bf16 autocast ---------------------------------------------------------------------

def test_bf16_autocast_training_step():
    """One Avalanche step per strategy family under the runner's AutocastPlugin on the GPU:
    the encoder runs in bf16, the teacher under the same autocast, heads and weights in fp32,
    and the loss and every gradient are finite."""
    from proxyfda_cl.models.tiny import TinyCNN
    from proxyfda_cl.benchmarks.streams import tensor_benchmark
    from proxyfda_cl.tools.stepping import prepare_strategy, train_step

    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    exps = list(tensor_benchmark([(x, y)] * 2).train_stream)
    batch = [x.to(DEV), y.to(DEV), torch.ones_like(y).to(DEV)]
    for name in ("naive", "fda", "proxy_fda", "ldifs", "ewc", "lwf", "fda+cache"):
        s = prepare_strategy(name, TinyCNN(), exps,
                             params={"fda": {"k": 4}, "proxy_fda": {"k": 4}}, batch_size=16,
                             device=torch.device(DEV), precision="bf16", optimizer="adamw",
                             lr=1e-3)
        dtypes = []
        hook = s.model.encoder.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        for _ in range(2):
            train_step(s, [t.clone() for t in batch])
        hook.remove()
        if name == "lwf":  # Avalanche's LwF runs the student a second time, in its
            dtypes = dtypes[::2]  # before_backward, outside autocast: only check the first
        assert dtypes and all(d == torch.bfloat16 for d in dtypes), (name, dtypes)
        assert s.mb_output.dtype == torch.float32, name
        assert torch.isfinite(s.loss).all(), name
        for n, p in s.model.named_parameters():
            assert p.dtype == torch.float32, (name, n)
            assert p.grad is None or torch.isfinite(p.grad).all(), (name, n)
        teacher = next((p for p in s.plugins if hasattr(p, "teacher_outputs")), None)
        if teacher is not None and name != "fda+cache":
            assert teacher._teacher._memo[3].dtype == torch.bfloat16, name


def test_bf16_run_with_workers_and_pinned_memory(tmp_path):
    cfg = _cfg(tmp_path, strategy="proxy_fda", precision="bf16", num_workers=2)
    rec = run(cfg)
    assert rec["status"] == "complete"
    assert rec["versions"]["device"].startswith(DEV)
    assert all(0.0 <= v <= 1.0 for row in rec["matrices"]["P"] for v in row)
    steps = rec["timing"]["per_experience"]
    assert all(t["steps"] > 0 and t["step_median_s"] > 0 for t in steps)


def test_step_timer_uses_events_without_syncing(monkeypatch):
    from proxyfda_cl.training import StepTimerPlugin

    calls = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a) or real(*a))

    class S:
        device = torch.device("cuda")

    timer = StepTimerPlugin()
    timer.before_training_exp(S())
    a = torch.randn(512, 512, device="cuda")
    for _ in range(3):
        timer.before_training_iteration(S())
        a = a @ a / 512
        timer.after_training_iteration(S())
    assert calls == [] and timer.times == []  # nothing read back inside the loop
    timer.after_training_exp(S())
    assert len(timer.times) == 3 and all(t > 0 for t in timer.times)
    assert timer.median() > 0


# --- GPU probe and OTDD ----------------------------------------------------------------

def test_gpu_probe_matches_cpu_probe():
    from torch.utils.data import TensorDataset

    from proxyfda_cl.metrics.probe import extract_features, fit_probe
    from proxyfda_cl.models.tiny import TinyCNN

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 64, generator=g) * 0.6
    ytr, yte = torch.arange(1000) % 5, torch.arange(400) % 5
    xtr = centres[ytr] + torch.randn(1000, 64, generator=g)
    xte = centres[yte] + torch.randn(400, 64, generator=g)
    cpu = fit_probe(xtr, ytr, xte, yte)
    gpu = fit_probe(xtr.to(DEV), ytr.to(DEV), xte.to(DEV), yte.to(DEV))
    assert 0.4 < cpu.accuracy < 1.0
    assert abs(cpu.accuracy - gpu.accuracy) <= 0.01

    enc = TinyCNN().eval()
    ds = TensorDataset(torch.randn(40, 3, 32, 32), torch.arange(40) % 4)
    on_cpu, _ = extract_features(enc, ds, device="cpu")
    on_gpu, _ = extract_features(enc.to(DEV), ds, device=DEV, num_workers=2)
    bf16, _ = extract_features(enc, ds, device=DEV, precision="bf16")
    assert on_gpu.device.type == "cpu" and bf16.dtype == torch.float32
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)
    assert (bf16 - on_cpu).abs().max() < 0.05 * on_cpu.abs().max()


def _blobs(rng, n, d, k, shift=0.0):
    y = np.arange(n) % k
    means = rng.normal(size=(k, d)) * 2.0
    return means[y] + rng.normal(size=(n, d)) + shift, y


@pytest.mark.parametrize("case", ["fresh", "class_moved"])
def test_sinkhorn_on_gpu_close_to_exact(case):
    from proxyfda_cl.metrics.otdd import feature_distances, otdd

    rng = np.random.default_rng(5)
    x1, y1 = _blobs(rng, 300, 16, 5)
    if case == "fresh":
        x2, y2 = _blobs(rng, 300, 16, 5)
    else:
        x2, y2 = x1.copy(), y1
        x2[y1 == 0] += 1.0
    exact = otdd(x1, y1, x2, y2, "exact")
    t = lambda a: torch.as_tensor(a).to(DEV)  # noqa: E731
    approx = otdd(t(x1), t(y1), t(x2), t(y2), "sinkhorn")
    assert abs(approx - exact) / exact < 0.05
    d = feature_distances(t(x1).float(), t(x2).float(), t(y1), method="sinkhorn", max_n=200)
    assert d["n"] == 200 and d["otdd"] > 0 and d["l2"] > 0


# --- the teacher cache on the GPU ------------------------------------------------------

def test_teacher_cache_on_gpu_matches_live_features():
    from torch import nn

    from proxyfda_cl.strategies.teacher import Teacher

    teacher = Teacher(cache_mb=1.0)
    teacher.module = nn.Linear(8, 4).to(DEV).eval().requires_grad_(False)
    x = torch.randn(20, 8, device=DEV)
    amp = (DEV, False, torch.bfloat16)
    for idx in ([0, 1, 2, 3], [2, 3, 4, 5], [5, 4, 3, 2], [9, 0, 5, 7]):
        i = torch.tensor(idx)  # the sampler's indices live on the CPU
        out, _ = teacher.forward((x[i.to(DEV)].clone(),), {}, amp, indices=i, size=20, key=0)
        torch.testing.assert_close(out, teacher.module(x[i.to(DEV)]))
    assert teacher.feature_cache.filled.device.type == "cpu"
    assert teacher.feature_cache.feats.device.type == DEV


# --- resume across devices -------------------------------------------------------------

def test_resume_on_the_gpu_and_across_devices(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path / "gpu", strategy="proxy_fda")
    with monkeypatch.context() as m:
        _trained_experiences(m, crash_in=1)
        with pytest.raises(Interrupt):
            run(cfg)
    ckpt = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["device"].startswith(DEV) and len(ckpt["state"]["R"]) == 1

    # the same device: resumes after the first experience
    events = []
    with monkeypatch.context() as m:
        log = _trained_experiences(m)
        rec = run(cfg, keep_checkpoints=True, on_event=events.append)
    assert log == [1], events
    assert any(e.startswith("resuming after experience 1") for e in events), events
    assert rec["status"] == "complete" and read_record(record_path(cfg))["status"] == "complete"
    final = torch.load(checkpoint_dir(cfg) / "last.pt", weights_only=True)
    assert next(iter(final["model"]["weights"].values())).device.type == DEV

    # device: auto, checkpointed on the GPU, rerun where CUDA is missing (and the reverse):
    # the checkpoint loads (on the CPU), is not resumed, and the run starts over and completes
    for first_gpu in (True, False):
        out = tmp_path / f"auto-{first_gpu}"
        cfg = _cfg(out, strategy="naive", device="auto")
        with monkeypatch.context() as m:
            _trained_experiences(m, crash_in=1)
            if not first_gpu:
                m.setattr(torch.cuda, "is_available", lambda: False)
            with pytest.raises(Interrupt):
                run(cfg)
        ckpt = torch.load(checkpoint_dir(cfg) / "last.pt", map_location="cpu", weights_only=True)
        assert ckpt["device"].startswith("cuda") == first_gpu
        events = []
        with monkeypatch.context() as m:
            log = _trained_experiences(m)
            if first_gpu:
                m.setattr(torch.cuda, "is_available", lambda: False)
            rec = run(cfg, on_event=events.append)
        assert log == [0, 1] and any("starting over" in e for e in events), events
        assert rec["status"] == "complete"
        assert rec["versions"]["device"].startswith("cpu" if first_gpu else "cuda")
