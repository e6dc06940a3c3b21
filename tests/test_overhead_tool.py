"""The ``overhead`` tool at any scale: JSON output, the teacher floor, the warm teacher cache,
bf16, and the second-experience set-up (tiny sizes, CPU)."""
import json

import pytest
import torch

from proxyfda_cl import cli
from proxyfda_cl.models.tiny import TinyCNN
from proxyfda_cl.benchmarks.streams import tensor_benchmark
from proxyfda_cl.tools import overhead
from proxyfda_cl.tools.overhead import measure_step_overhead
from proxyfda_cl.tools.stepping import prepare_strategy, train_step
from proxyfda_cl.strategies.teacher import Teacher


@pytest.mark.slow
def test_overhead_json(capsys):
    code = cli.main(["overhead", "--backbone", "tiny", "--weights", "random", "--batch-size", "12",
                     "--steps", "1", "--warmup", "0", "--strategies", "fda", "ewc",
                     "--teacher-cache", "--precision", "bf16", "--threads", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["ratio"]) == ["naive", "fda", "ewc", "fda+cache"]
    assert out["ratio"]["naive"] == 1.0
    assert all(v > 0 for v in out["median_step_s"].values())
    assert all(v > 0 for v in out["images_per_s"].values())
    assert out["peak_mem_mb"]["fda"] is None  # CPU: no GPU memory to report
    assert out["floor_s"] > out["median_step_s"]["naive"] and out["teacher_forward_s"] > 0
    assert list(out["vs_floor"]) == ["fda"]
    assert out["settings"]["precision"] == "bf16" and out["settings"]["experience"] == 2
    assert out["weights"] == "random"


def test_overhead_rejects_bad_flags(capsys):
    assert cli.main(["overhead", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_warm_cache_runs_the_teacher_once(monkeypatch):
    calls = []
    real = Teacher._run

    def counting(self, *a, **k):
        calls.append(len(a[0][0]))
        return real(self, *a, **k)

    monkeypatch.setattr(Teacher, "_run", counting)
    x, y = torch.randn(12, 3, 32, 32), torch.arange(12) % 4
    exps = list(tensor_benchmark([(x, y)] * 2).train_stream)
    strategy = prepare_strategy("fda+cache", TinyCNN(), exps, params={"fda": {"k": 3}},
                                batch_size=12, device=torch.device("cpu"), precision="fp32",
                                optimizer="sgd", lr=1e-3)
    batch = [x, y, torch.ones_like(y)]
    for _ in range(3):
        train_step(strategy, [t.clone() for t in batch])
    assert calls == [12]  # filled at the first step, served from the cache afterwards
    live = prepare_strategy("fda", TinyCNN(), exps, params={"fda": {"k": 3}}, batch_size=12,
                            device=torch.device("cpu"), precision="fp32", optimizer="sgd",
                            lr=1e-3)
    for _ in range(2):
        train_step(live, [t.clone() for t in batch])
    assert calls == [12, 12, 12]


@pytest.mark.slow
def test_second_experience_activates_ewc_and_lwf():
    res = measure_step_overhead(TinyCNN, ["ewc", "lwf"], batch_size=8, steps=1, warmup=0,
                                order="sequential", optimizer="adamw")
    assert list(res["strategies"]) == ["naive", "ewc", "lwf"]
    assert res["settings"]["order"] == "sequential" and res["vs_floor"] == {}
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    exps = list(tensor_benchmark([(x, y)] * 2).train_stream)
    ewc = prepare_strategy("ewc", TinyCNN(), exps, params={}, batch_size=8,
                           device=torch.device("cpu"), precision="fp32", optimizer="sgd", lr=1e-3)
    assert ewc.clock.train_exp_counter == 1 and ewc.plugins[0].importances[0]
    assert overhead.CACHE_SUFFIX == "+cache"


@pytest.mark.slow
def test_memory_variants_time_a_full_memory(capsys, monkeypatch):
    """``--memory-sizes``: each FDA variant steps with a memory already full of entries the
    batch does not hold (the warm-up lasts until it is full)."""
    from proxyfda_cl.strategies import fda as fda_module
    seen = []
    real = fda_module.fda_loss

    def spy(*a, memory=None, **k):
        seen.append(0 if memory is None else len(memory.teacher))
        return real(*a, memory=memory, **k)

    monkeypatch.setattr(fda_module, "fda_loss", spy)
    code = cli.main(["overhead", "--backbone", "tiny", "--weights", "random", "--batch-size", "12",
                     "--steps", "2", "--warmup", "0", "--strategies", "fda",
                     "--memory-sizes", "30", "--threads", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["ratio"]) == ["naive", "fda", "fda+mem30"]
    assert out["settings"]["warmup"] == 3  # ceil(30 / 12)
    # round-robin: fda then fda+mem30 at every step; timed steps see a full memory
    assert seen[1::2][:3] == [0, 12, 24] and seen[1::2][3:] == [30, 30]
    assert seen[0::2] == [0] * 5
    assert cli.main(["overhead", "--memory-sizes", "0"]) == 2
    assert "--memory-sizes" in capsys.readouterr().err
