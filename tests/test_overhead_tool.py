"""The ``overhead`` tool at any scale: JSON output, the teacher floor, the warm teacher cache,
bf16, and the second-experience set-up (tiny sizes, CPU)."""
import json

import torch

from proxyfda_cl import cli
from proxyfda_cl.models.tiny import TinyCNN
from proxyfda_cl.benchmarks.streams import tensor_benchmark
from proxyfda_cl.tools import overhead
from proxyfda_cl.tools.overhead import measure_step_overhead
from proxyfda_cl.tools.stepping import prepare_strategy, train_step
from proxyfda_cl.strategies.teacher import Teacher


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
