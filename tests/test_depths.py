"""FDA, Proxy-FDA and LDIFS at chosen depths (``strategy.layers``; METHOD.md "Depths")."""
import json

import pytest
import torch

from proxyfda_cl.core.errors import ConfigError
from proxyfda_cl.strategies import FDAPlugin, LDIFSPlugin, ProxyFDAPlugin, build_strategy
from proxyfda_cl.strategies.depths import pooled
from proxyfda_cl.strategies.proxy import proxy_fda_loss

from .conftest import small_config_dict
from .test_fda import reference_boundary_fda
from .test_plugins import Capture, Total, make_strategy, toy_stream


def unit(a):
    return a / a.norm(dim=1, keepdim=True)  # the channel dim of [B, C, H, W] and [B, C]


def depths(enc, x):
    """TinyEncoder's conv1 and conv2 outputs and its embedding, computed by hand."""
    c1 = enc.conv1(x)
    c2 = enc.conv2(torch.relu(enc.bn(c1)))
    return {"conv1": c1, "conv2": c2, "final": enc(x)}


def test_pooled_normalises_each_position_then_averages():
    a = torch.randn(3, 5, 4, 2)
    torch.testing.assert_close(pooled(a), unit(a).mean((2, 3)))
    tokens = torch.randn(3, 6, 5)  # [B, N, C]
    torch.testing.assert_close(pooled(tokens), (tokens / tokens.norm(dim=2, keepdim=True)).mean(1))
    flat = torch.randn(3, 7)
    assert pooled(flat) is flat


def run_rows(plugin):
    capture = Capture(plugin)
    make_strategy([capture, plugin, Total(capture)]).train(toy_stream().train_stream)
    assert len(capture.rows) == 4
    return capture.rows


@pytest.mark.parametrize("layers,names", [("ldifs", ["conv1", "conv2", "final"]),
                                          ("conv2,final", ["conv2", "final"]),
                                          ("conv1", ["conv1"])])
def test_fda_at_several_depths_is_the_mean_of_per_depth_losses(layers, names):
    """Against the brute-force FDA (anchor by anchor) on each depth's pooled features."""
    rows = run_rows(FDAPlugin(lam=0.7, k=3, tau=0.5, boundary="teacher", layers=layers))
    with torch.no_grad():
        for row in rows:
            s, t = depths(row["student"], row["x"]), depths(row["teacher"], row["x"])
            per = [reference_boundary_fda(pooled(s[n]), pooled(t[n]), 3, 0.5, 0.0) for n in names]
            torch.testing.assert_close((row["total"] - row["ce"]).squeeze(),
                                       0.7 * torch.stack(per).mean(), atol=1e-5, rtol=1e-4)


def test_proxy_fda_at_several_depths_has_a_generator_per_depth():
    plugin = ProxyFDAPlugin(lam=0.7, k=3, tau=0.1, boundary="fixed", layers="ldifs")
    rows = run_rows(plugin)
    assert sorted(plugin.generators) == ["conv1", "conv2", "final"]
    assert plugin.generators["conv1"][0].projection.shape[0] == 4  # conv1's 4 channels
    with torch.no_grad():
        for row in rows[1:]:  # the generators exist from the second minibatch on
            s, t = depths(row["student"], row["x"]), depths(row["teacher"], row["x"])
            per = [proxy_fda_loss(pooled(s[n]), pooled(t[n]), row["gens"][n], 3).fda
                   for n in ("conv1", "conv2", "final")]
            torch.testing.assert_close((row["total"] - row["ce"]).squeeze(),
                                       0.7 * torch.stack(per).mean(), atol=1e-5, rtol=1e-4)


def test_ldifs_on_the_final_embedding_only():
    rows = run_rows(LDIFSPlugin(alpha=10.0, layers="final"))
    with torch.no_grad():
        for row in rows:
            s, t = row["student"](row["x"]), row["teacher"](row["x"])
            expected = ((unit(s) - unit(t)) ** 2).sum(1).mean()
            torch.testing.assert_close((row["total"] - row["ce"]).squeeze(), 10.0 * expected,
                                       atol=1e-5, rtol=1e-4)


def test_layer_settings_are_checked():
    assert build_strategy("fda", {"layers": ["conv1", "final"]}).plugins[0].layers == "conv1,final"
    for params, word in (({"layers": "ldifs", "memory_size": 8}, "memory_size"),
                         ({"layers": "conv1", "max_grad_ratio": 1.0}, "max_grad_ratio"),
                         ({"layers": "ldifs,final"}, "stands alone"),
                         ({"layers": ""}, "empty")):
        with pytest.raises(ConfigError, match=word):
            build_strategy("fda", params)
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        make_strategy([FDAPlugin(k=3, layers="nope,final")]).train(toy_stream().train_stream[0])


@pytest.mark.slow
def test_a_bad_layer_name_exits_2_with_one_line(tmp_path, tiny_weights, capsys):
    from proxyfda_cl.cli import main

    d = small_config_dict(str(tmp_path), tiny_weights, strategy="fda")
    d["strategy"]["layers"] = "stage9"
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(d))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strategy.layers" in err[0] and "'stage9'" in err[0]
    assert "Traceback" not in err[0]


def test_default_depths_keep_run_ids():
    from proxyfda_cl.config import make_config

    for name, default in (("fda", "final"), ("proxy_fda", "final"), ("ldifs", "ldifs")):
        base = make_config({"strategy": {"name": name}})
        assert base.strategy.params["layers"] == default
        assert make_config({"strategy": {"name": name, "layers": default}}).id == base.id
        other = "ldifs" if default == "final" else "final"
        assert make_config({"strategy": {"name": name, "layers": other}}).id != base.id
