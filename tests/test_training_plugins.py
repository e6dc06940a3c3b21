"""The runner's training plugins: probe-initialised heads, frozen and recomputed BatchNorm
statistics, the divergence guard, and the collapsed flag of a run."""
import copy
import json
import math

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from proxyfda_cl.metrics.probe import fit_linear
from proxyfda_cl.config import from_dict, make_config
from proxyfda_cl.run.runner import run
from proxyfda_cl.training import (DivergedError, DivergenceGuardPlugin, FrozenBatchNormPlugin,
                                   HeadInitPlugin, RecomputeBatchNormPlugin, recompute_statistics)

from .conftest import small_config_dict
from .test_plugins import make_strategy, toy_stream


class HeadSnapshot(SupervisedPlugin):
    """Copies the current task's head just before the first training step."""

    def __init__(self):
        super().__init__()
        self.heads = []

    def before_training_iteration(self, strategy, **kwargs):
        if strategy.clock.train_exp_iterations == 0:
            task = str(int(strategy.experience.task_labels[0]))
            lin = strategy.model.heads.classifiers[task].classifier
            self.heads.append((lin.weight.detach().clone(), lin.bias.detach().clone()))


def test_raw_feature_fit_maps_back_to_the_input_coordinates():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(40)
    x = torch.randn(120, 5, generator=g) * 0.3 + 5.0 + torch.eye(5)[y] * 3.0  # offset, unnormalised
    fit = fit_linear(x, y, grid=[1e-4], normalize=False)
    assert ((x @ fit.weight.T + fit.bias).argmax(1) == y).float().mean() == 1.0
    assert fit.classes.tolist() == [0, 1, 2]


def test_probe_init_sets_each_new_head_to_a_probe_of_its_task_and_freeze_keeps_it():
    bench = toy_stream(n_exp=2, n_cls=4, per_cls=12)
    snap = HeadSnapshot()
    init = HeadInitPlugin(mode="probe", freeze=True, grid=[1e-3])
    strategy = make_strategy([init, snap], epochs=2)
    for exp in bench.train_stream:
        strategy.train(exp)
        task = str(int(exp.task_labels[0]))
        lin = strategy.model.heads.classifiers[task].classifier
        w0, b0 = snap.heads[-1]
        assert torch.equal(lin.weight, w0) and torch.equal(lin.bias, b0)  # frozen: unchanged
    # the snapshot before training equals a fresh raw-feature probe of the initial encoder
    fresh = make_strategy([])
    x = torch.cat([b[0][None] for b in bench.train_stream[0].dataset])
    y = torch.tensor([int(b[1]) for b in bench.train_stream[0].dataset])
    fresh.model.eval()
    with torch.no_grad():
        feats = fresh.model.encoder(x)
    fit = fit_linear(feats, y, grid=[1e-3], normalize=False)
    w0, b0 = snap.heads[0]
    assert torch.allclose(w0[fit.classes], fit.weight, atol=1e-5)
    assert torch.allclose(b0[fit.classes], fit.bias, atol=1e-5)


def test_unfrozen_probe_head_trains():
    bench = toy_stream(n_exp=1, n_cls=4, per_cls=12)
    snap = HeadSnapshot()
    strategy = make_strategy([HeadInitPlugin(mode="probe", grid=[1e-3]), snap])
    strategy.train(bench.train_stream[0])
    lin = strategy.model.heads.classifiers["0"].classifier
    assert not torch.equal(lin.weight, snap.heads[0][0])


def test_frozen_batchnorm_keeps_the_running_statistics():
    bench = toy_stream(n_exp=1)
    for frozen in (True, False):
        strategy = make_strategy([FrozenBatchNormPlugin()] if frozen else [], bn=True)
        bn = strategy.model.encoder.bn
        before = bn.running_mean.clone(), bn.running_var.clone()
        weight = bn.weight.detach().clone()
        strategy.train(bench.train_stream[0])
        same = torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
        assert same is frozen
        assert not torch.equal(bn.weight, weight)  # the affine weights still train


def test_recomputed_statistics_average_the_batches_with_dropout_off():
    """Batches of 4 of 12 rows: the running mean is the mean of the batch means, the running
    variance the mean of the unbiased batch variances; dropout stays off (it would zero and
    rescale the inputs), the momentum comes back and the module is left in eval mode."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g) * torch.tensor([1.0, 2.0, 5.0]) + torch.tensor([0.0, 3.0, -1.0])
    net = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(3))
    net[1].running_mean.fill_(7.0)
    data = torch.utils.data.TensorDataset(x, torch.zeros(12))
    out = recompute_statistics(net, data, batch_size=4, device=torch.device("cpu"))
    batches = x.view(3, 4, 3)
    torch.testing.assert_close(net[1].running_mean, batches.mean(1).mean(0))
    torch.testing.assert_close(net[1].running_var, batches.var(1, unbiased=True).mean(0))
    assert out is net and not net.training and not net[1].training and net[1].momentum == 0.1


def test_recompute_plugin_leaves_the_statistics_of_the_final_weights():
    """After an experience the running statistics are those one pass of the experience's
    images gives under the final weights, not the exponential average over the weights
    training passed through; without the plugin they are not."""
    bench = toy_stream(n_exp=1)
    stats = {}
    for on in (True, False):
        plugins = [RecomputeBatchNormPlugin(batch_size=8)] if on else []
        strategy = make_strategy(plugins, epochs=3, bn=True, momentum=0.9)
        strategy.train(bench.train_stream[0])
        enc = strategy.model.encoder
        assert enc.training  # the plugin gives the encoder back in the mode it found it
        ref = recompute_statistics(copy.deepcopy(enc), bench.train_stream[0].dataset.eval(),
                                   batch_size=8, device=torch.device("cpu")).bn
        stats[on] = torch.allclose(enc.bn.running_mean, ref.running_mean, atol=1e-6) and \
            torch.allclose(enc.bn.running_var, ref.running_var, atol=1e-6)
        assert enc.bn.momentum == 0.1
    assert stats == {True: True, False: False}


def test_batchnorm_recompute_is_in_the_id_only_when_statistics_update():
    """Frozen statistics leave nothing to recompute, so the option does not touch those ids;
    with ``batchnorm: train`` off (the earlier behaviour) it keeps the earlier id."""
    frozen = make_config(sets=["train.batchnorm=frozen"])
    assert make_config(sets=["train.batchnorm=frozen", "train.batchnorm_recompute=false"]).id == frozen.id
    train = make_config(sets=["train.batchnorm=train"])
    earlier = make_config(sets=["train.batchnorm=train", "train.batchnorm_recompute=false"])
    assert train.train.batchnorm_recompute is True and train.id != earlier.id != frozen.id


def test_guard_names_the_experience_and_the_step():
    bench = toy_stream(n_exp=1, n_cls=4, per_cls=12)

    class Poison(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            if strategy.clock.train_exp_iterations == 2:
                strategy.loss = strategy.loss * float("nan")

    guard = DivergenceGuardPlugin(lr=0.1, check_every=100, hint=" or strategy.lam")
    strategy = make_strategy([Poison(), guard])
    with pytest.raises(DivergedError) as e:
        strategy.train(bench.train_stream[0])
    msg = str(e.value)
    assert "experience 1 at step 3" in msg and "train.lr (now 0.1)" in msg
    assert "strategy.lam" in msg and "\n" not in msg


@pytest.mark.slow
def test_absurd_learning_rate_ends_failed_with_one_line(tmp_path, tiny_weights, capsys):
    from proxyfda_cl.cli import main

    d = small_config_dict(str(tmp_path), tiny_weights)
    d["train"]["lr"] = 1e6
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(d))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0] and "Traceback" not in err[0]
    rec = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert rec["status"] == "failed" and "non-finite" in rec["error"] and "train.lr" in rec["error"]


@pytest.mark.slow
def test_a_run_at_chance_is_flagged_collapsed(tmp_path, tiny_weights):
    d = small_config_dict(str(tmp_path / "a"), tiny_weights)
    d["train"].update(lr=1e-12, batchnorm="train")  # heads stay random: accuracy at chance
    d["train"]["freeze_head"] = True
    rec = run(from_dict(d))
    assert rec["status"] == "complete"
    assert 2 in rec["collapsed"]  # digits[0:4] at 25%
    # a probe-initialised head on the same (random-weight) encoder reads digits well
    d = small_config_dict(str(tmp_path / "b"), tiny_weights)
    d["train"].update(head_init="probe", batchnorm="frozen", lr=1e-12)
    rec = run(from_dict(d))
    assert 2 not in rec["collapsed"] and rec["matrices"]["R"][1][1] > 0.6
    assert all(e["knn_overlap"] >= 0.99 for e in rec["distances"])  # nothing moved


@pytest.mark.slow
def test_batchnorm_only_drift_is_recorded_for_a_batchnorm_network_in_train_mode(tmp_path,
                                                                                 tiny_weights):
    d = small_config_dict(str(tmp_path / "train"), tiny_weights)
    d["train"].update(lr=1e-12, batchnorm="train")  # weights stay put: the drift is BN's
    rec = run(from_dict(d))
    for e in rec["distances"]:
        assert e["bn_l2"] > 0.01 and e["bn_otdd"] > 0 and 0 <= e["bn_knn_overlap"] <= 1
        assert e["l2"] > 0.01  # the trained encoder drifted too, with no weight moving
        # its statistics were recomputed on the same images: it is the BatchNorm-only encoder
        assert e["l2"] == pytest.approx(e["bn_l2"], abs=1e-4)
    d = small_config_dict(str(tmp_path / "frozen"), tiny_weights)
    d["train"].update(lr=1e-12, batchnorm="frozen")
    rec = run(from_dict(d))
    assert all("bn_l2" not in e and e["l2"] < 1e-3 for e in rec["distances"])
    d = small_config_dict(str(tmp_path / "off"), tiny_weights)
    d["train"].update(lr=1e-12, batchnorm="train")
    d["eval"]["bn_drift"] = False
    assert all("bn_l2" not in e for e in run(from_dict(d))["distances"])


@pytest.mark.parametrize("backbone", [
    {"name": "openclip:ViT-S-32", "weights": "random", "input_size": 32},
    {"name": "timm:resnet18", "weights": "random", "input_size": 32},
    {"name": "torch:{tests}/test_encoders.py:make_user_net", "input_size": 32},
])
@pytest.mark.slow
def test_probe_heads_work_on_every_backbone_family(backbone, tmp_path, tiny_weights):
    import os

    d = small_config_dict(str(tmp_path), tiny_weights)
    backbone = dict(backbone, name=backbone["name"].format(tests=os.path.dirname(__file__)))
    d["backbone"] = backbone
    d["train"].update(head_init="probe", freeze_head=True, lr=1e-12)
    d["benchmark"]["experiences"] = ["digits[0:4]"]
    d["benchmark"]["probes"] = []
    d["eval"]["distances"] = False
    rec = run(from_dict(d))
    assert rec["status"] == "complete"
    chance = 1 / 4
    assert rec["matrices"]["R"][0][0] > chance + 0.2  # the probe head reads the features


class LRLog(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.lrs = []

    def before_forward(self, strategy, **kwargs):
        self.lrs.append(strategy.optimizer.param_groups[0]["lr"])


def test_lr_schedule_warms_up_and_decays_and_restarts_after_lp_ft_head_epochs():
    from proxyfda_cl.training import LRSchedulePlugin

    bench = toy_stream(n_exp=1, n_cls=4, per_cls=12)  # 48 samples, batches of 12: 4 steps
    for restart in (0, 1):
        log = LRLog()
        sched = LRSchedulePlugin(base_lr=0.1, warmup_steps=2, schedule="cosine",
                                 restart_epochs=restart)
        strategy = make_strategy([sched, log], epochs=3)
        strategy.train(bench.train_stream[0])
        lrs = log.lrs
        assert len(lrs) == 12
        if restart == 0:  # one schedule over 12 steps: 2 warm-up steps, then cosine over 10
            assert lrs[:2] == pytest.approx([0.05, 0.1])
            assert lrs[2:] == pytest.approx([0.05 * (1 + math.cos(math.pi * (s - 2) / 10))
                                             for s in range(2, 12)])
        else:  # 4 head-only steps with their own schedule, then 8 steps warmed up anew
            assert lrs[:2] == pytest.approx([0.05, 0.1]) and lrs[4:6] == pytest.approx([0.05, 0.1])
            assert lrs[2:4] == pytest.approx([0.05 * (1 + math.cos(math.pi * s / 2)) for s in (0, 1)])
            assert lrs[6:] == pytest.approx([0.05 * (1 + math.cos(math.pi * s / 6)) for s in range(6)])


def test_stopwatch_on_the_cpu_gives_each_interval_in_order():
    import time

    from proxyfda_cl.training import Stopwatch

    watch = Stopwatch("cpu")
    assert not watch.events
    for pause in (0.02, 0.0, 0.01):
        watch.start()
        time.sleep(pause)
        watch.stop()
    t = watch.times()
    assert len(t) == 3 and t[0] >= 0.02 and t[2] >= 0.01 and t[1] < t[0]
    assert watch.times() == t  # reading does not consume them


def test_stage_times_sum_named_calls_nest_and_resume():
    from proxyfda_cl.training import StageTimes

    st = StageTimes("cpu")
    for _ in range(3):
        with st("outer"):
            with st("inner"):
                pass
    with pytest.raises(RuntimeError), st("failing"):
        raise RuntimeError("a stage that fails is still counted")
    d = st.as_dict()
    assert {k: v["calls"] for k, v in d.items()} == {"failing": 1, "inner": 3, "outer": 3}
    assert d["outer"]["s"] >= d["inner"]["s"] >= 0.0
    again = StageTimes("cpu")
    again.load(d)
    again.add("inner", 0.5)
    assert again.as_dict()["inner"] == {"s": d["inner"]["s"] + 0.5, "calls": 4}
    assert StageTimes("cpu", sync=True).sync is False  # nothing to synchronise on the CPU
