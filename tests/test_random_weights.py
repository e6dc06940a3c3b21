"""``backbone.weights: random``: architectures built on purpose without weights, offline, and
never as a silent fallback for missing weights."""
import json

import open_clip
import pytest
import torch

from proxyfda_cl.config import BackboneConfig, from_dict
from proxyfda_cl.core.errors import ConfigError, WeightsError
from proxyfda_cl.models import build_encoder
from proxyfda_cl.run.runner import run
from tests.conftest import small_config_dict

VIT = "pfcl-rand-vit"


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("oc_rand")
    (d / f"{VIT}.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 4, "width": 32, "head_width": 16,
                       "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2,
                     "layers": 1}}))
    open_clip.add_model_config(d)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Fail the test if anything tries to reach a hub or read a hub cache."""
    import urllib.request

    def refuse(*a, **k):
        raise AssertionError("random weights must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_openclip_random(no_network):
    enc = build_encoder(BackboneConfig(name=f"openclip:{VIT}", weights="random"))
    assert enc.random_init is True
    assert enc.feature_dim == 16 and enc.input_size == 32
    assert enc.ldifs_layers  # the ViT's LDIFS layers are there as with weights
    out = enc.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16) and torch.isfinite(out).all()


@pytest.mark.slow
def test_openclip_random_with_a_tag_keeps_its_preprocessing(no_network):
    enc = build_encoder(BackboneConfig(name="openclip:ViT-B-32/openai", weights="random",
                                       input_size=32))
    assert enc.random_init is True and enc.input_size == 32
    assert enc.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_timm_random(no_network):
    enc = build_encoder(BackboneConfig(name="timm:test_vit", weights="random"))
    assert enc.random_init is True
    out = enc.eval()(torch.randn(2, 3, enc.input_size, enc.input_size))
    assert out.shape == (2, enc.feature_dim)
    assert enc.ldifs_layers


def test_tiny_random_needs_no_pretraining(no_network):
    enc = build_encoder(BackboneConfig(name="tiny", weights="random"))
    assert enc.random_init is True and not enc.training


def test_weights_from_a_file_are_not_marked_random(tmp_path, no_network):
    torch.manual_seed(0)
    model = open_clip.create_model(VIT)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    enc = build_encoder(BackboneConfig(name=f"openclip:{VIT}", weights=str(tmp_path / "clip.pt")))
    assert enc.random_init is False


def test_missing_weights_still_fail_fast(tmp_path, no_network):
    # Only the literal value "random" builds without weights; nothing falls back to it.
    with pytest.raises(ConfigError, match="names no weights"):
        build_encoder(BackboneConfig(name=f"openclip:{VIT}"))
    with pytest.raises(WeightsError, match="file not found"):
        build_encoder(BackboneConfig(name=f"openclip:{VIT}", weights=str(tmp_path / "Random")))
    with pytest.raises(WeightsError, match="weights not found offline"):
        build_encoder(BackboneConfig(name="timm:vit_small_patch16_224"))
    with pytest.raises(ConfigError, match="also names"):
        build_encoder(BackboneConfig(name=f"openclip:{VIT}/{tmp_path / 'x.pt'}", weights="random"))
    with pytest.raises(ConfigError, match="random is for openclip"):
        build_encoder(BackboneConfig(name="torch:os:getcwd", weights="random"))


@pytest.mark.slow
def test_record_says_random(tmp_path):
    d = small_config_dict(str(tmp_path / "res"), "random")
    d["backbone"] = {"name": f"openclip:{VIT}", "weights": "random"}
    d["train"]["epochs"] = 1
    rec = run(from_dict(d))
    assert rec["status"] == "complete"
    assert rec["config"]["backbone"]["weights"] == "random"
