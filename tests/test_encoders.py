"""open_clip, timm and user-module encoders built from local checkpoints the tests write."""
import copy
import json
import os
import http.server
import threading
import time

import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import proxyfda_cl.models.custom  # noqa: F401  (registers torch:)
import proxyfda_cl.models.openclip  # noqa: F401  (registers openclip:)
import proxyfda_cl.models.timm_encoder as te
from proxyfda_cl.config import BackboneConfig
from proxyfda_cl.core.errors import ConfigError, WeightsError
from proxyfda_cl.models import build_encoder, image_transform
from proxyfda_cl.models.hub import hub_reachable

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
VIT, RN = "pfcl-test-vit", "pfcl-test-rn"
TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread avoids contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("oc_cfg")
    vit = {"image_size": 32, "layers": 12, "width": 32, "head_width": 16, "patch_size": 8}
    rn = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}
    for name, vision in ((VIT, vit), (RN, rn)):
        (d / f"{name}.json").write_text(json.dumps(
            {"embed_dim": 24, "vision_cfg": vision, "text_cfg": TEXT}))
    open_clip.add_model_config(d)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty HF cache and no hub; library offline flags restored afterwards."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", hc.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def fire_hooks(encoder, x):
    """Output shape of every LDIFS layer for input ``x``."""
    modules, shapes = dict(encoder.named_modules()), {}
    handles = [modules[n].register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape))) for n in encoder.ldifs_layers]
    with torch.no_grad():
        encoder(x)
    for h in handles:
        h.remove()
    return shapes


def saved_clip(arch, path, seed=1):
    torch.manual_seed(seed)
    model = open_clip.create_model(arch).eval()
    torch.save(model.state_dict(), path)
    return model


# --- open_clip ------------------------------------------------------------------------

def test_openclip_vit_from_local_file_matches_encode_image(tmp_path):
    clip = saved_clip(VIT, tmp_path / "clip.pt")
    torch.manual_seed(99)
    enc = build_encoder(BackboneConfig(name=f"openclip:{VIT}/{tmp_path / 'clip.pt'}")).eval()
    x = torch.randn(2, 3, 32, 32)
    assert enc.feature_dim == 24
    torch.testing.assert_close(enc(x), clip.encode_image(x))
    assert not hasattr(enc, "text") and not any(n.startswith("transformer") for n, _ in
                                                enc.named_children())

    # preprocessing is open_clip's own and image_transform applies it
    pp = clip.visual.preprocess_cfg
    assert enc.input_size == pp["size"][0] == 32
    assert enc.mean == pytest.approx(pp["mean"]) and enc.mean == pytest.approx(OPENAI_MEAN)
    img = torch.full((3, 48, 64), 255, dtype=torch.uint8)
    out = image_transform(enc)(img)
    assert out.shape == (3, 32, 32)
    expected = (1.0 - torch.tensor(OPENAI_MEAN)) / torch.tensor(enc.std)
    torch.testing.assert_close(out[:, 5, 7], expected)

    # LDIFS: ln_pre and blocks 3, 6, 9, 12 (1-based), tokens [B, 1 + 16 patches, width]
    names = ["visual.ln_pre"] + [f"visual.transformer.resblocks.{i}" for i in (2, 5, 8, 11)]
    assert enc.ldifs_layers == {n: -1 for n in names}
    shapes = fire_hooks(enc, x)
    assert set(shapes) == set(names)
    assert all(s == (2, 17, 32) for s in shapes.values())


def test_openclip_visual_only_checkpoint_and_overrides(tmp_path):
    clip = saved_clip(RN, tmp_path / "full.pt", seed=3)
    torch.save(clip.visual.state_dict(), tmp_path / "visual.pt")
    cfg = BackboneConfig(name=f"openclip:{RN}", weights=str(tmp_path / "visual.pt"),
                         mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    enc = build_encoder(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(enc(x), clip.encode_image(x))
    assert enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.25, 0.25, 0.25)

    # ModifiedResNet: layer1..layer4, NCHW; channels width*4*2^(i-1), side halves per stage
    assert enc.ldifs_layers == {f"visual.layer{i}": 1 for i in range(1, 5)}
    shapes = fire_hooks(enc, x)
    assert [shapes[f"visual.layer{i}"] for i in range(1, 5)] == [
        (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2), (2, 256, 1, 1)]


def test_openclip_tag_preprocessing_and_quick_gelu(tmp_path, monkeypatch, offline):
    tag = {"hf_hub": "nobody/pfcl-test/", "mean": (0.5,) * 3, "std": (0.5,) * 3,
           "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, VIT, {"fake": tag})
    saved_clip(VIT, tmp_path / "clip.pt")
    enc = build_encoder(BackboneConfig(name=f"openclip:{VIT}/fake",
                                       weights=str(tmp_path / "clip.pt")))
    assert enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.5, 0.5, 0.5)
    acts = {type(m).__name__ for m in enc.modules()}
    assert "QuickGELU" in acts and "GELU" not in acts

    # the same tag with nothing cached and no hub: a fast one-line error naming file and flag
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        build_encoder(BackboneConfig(name=f"openclip:{VIT}/fake"))
    assert time.perf_counter() - t0 < 5.0
    msg = str(err.value)
    assert "\n" not in msg and "open_clip_pytorch_model.bin" in msg
    assert "huggingface.co/nobody/pfcl-test" in msg and "backbone.weights" in msg


def test_openclip_hub_tag_offline_fails_fast(offline):
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match=r"ViT-B-32/openai: weights not found offline; "
                                           r"download open_clip_pytorch_model.bin"):
        build_encoder(BackboneConfig(name="openclip:ViT-B-32/openai"))
    assert time.perf_counter() - t0 < 5.0


def test_openclip_bad_names_and_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown open_clip architecture 'ViT-B-99'.*ViT-B-32"):
        build_encoder(BackboneConfig(name="openclip:ViT-B-99/openai"))
    with pytest.raises(ConfigError, match="'nope' is neither a pretrained tag.*openai"):
        build_encoder(BackboneConfig(name="openclip:ViT-B-32/nope"))
    with pytest.raises(ConfigError, match="names no weights"):
        build_encoder(BackboneConfig(name="openclip:ViT-B-32"))
    bad = tmp_path / "broken.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=f"cannot load weights from {bad}"):
        build_encoder(BackboneConfig(name=f"openclip:{VIT}", weights=str(bad)))
    saved_clip(RN, tmp_path / "rn.pt")
    with pytest.raises(WeightsError, match="rn.pt"):  # weights of another architecture
        build_encoder(BackboneConfig(name=f"openclip:{VIT}/{tmp_path / 'rn.pt'}"))
    with pytest.raises(WeightsError, match="file not found"):
        build_encoder(BackboneConfig(name=f"openclip:{VIT}", weights=str(tmp_path / "no.pt")))


# --- timm ------------------------------------------------------------------------------

def test_quarter_depths():
    assert te.quarter_depths(12) == [3, 6, 9, 12]
    assert te.quarter_depths(6) == [2, 3, 5, 6]
    assert te.quarter_depths(24) == [6, 12, 18, 24]
    assert te.quarter_depths(2) == [1, 2]


def test_timm_vit_from_local_file(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("test_vit", num_classes=1000).eval()  # with a head: it is dropped
    torch.save(ref.state_dict(), tmp_path / "vit.pth")
    enc = build_encoder(BackboneConfig(name="timm:test_vit", weights=str(tmp_path / "vit.pth")))
    enc.eval()
    data = timm.data.resolve_data_config({}, model=ref)
    assert enc.input_size == data["input_size"][-1] == 160
    assert enc.mean == pytest.approx(data["mean"]) and enc.std == pytest.approx(data["std"])
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(enc(x), expected)
    assert enc.feature_dim == ref.num_features == 64
    assert "state_dict" not in enc.model.pretrained_cfg  # no second copy of the weights

    # norm_pre and blocks at quarters of 6 (2, 3, 5, 6 one-based), tokens [B, N, C]
    names = ["model.norm_pre"] + [f"model.blocks.{i}" for i in (1, 2, 4, 5)]
    assert enc.ldifs_layers == {n: -1 for n in names}
    shapes = fire_hooks(enc, x)
    n_tokens = (160 // 16) ** 2 + ref.num_prefix_tokens
    assert set(shapes) == set(names) and all(s == (2, n_tokens, 64) for s in shapes.values())

    # a checkpoint of another architecture, and an unreadable file, name the path
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="other.pth"):
        build_encoder(BackboneConfig(name="timm:test_vit", weights=str(tmp_path / "other.pth")))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot read weights file .*junk.pth"):
        build_encoder(BackboneConfig(name="timm:test_vit", weights=str(tmp_path / "junk.pth")))


def test_timm_cnn_from_hf_cache_when_present(offline):
    torch.manual_seed(2)
    ref = timm.create_model("test_resnet", num_classes=1000).eval()
    hub_id = ref.pretrained_cfg["hf_hub_id"]
    repo = offline / "hf" / "hub" / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(ref.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))

    enc = build_encoder(BackboneConfig(name="timm:test_resnet", input_size=64)).eval()
    assert enc.input_size == 64 and enc.mean == pytest.approx(ref.pretrained_cfg["mean"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref.forward_head(ref.forward_features(x),
                                                            pre_logits=True))
    # CNN stages, NCHW, channels as timm's feature_info says
    chs = {f"model.{f['module']}": f["num_chs"] for f in ref.feature_info}
    assert enc.ldifs_layers == {f"model.layer{i}": 1 for i in range(1, 5)}
    shapes = fire_hooks(enc, x)
    for name, shape in shapes.items():
        assert len(shape) == 4 and shape[1] == chs[name]
    assert [s[-1] for s in shapes.values()] == [16, 8, 4, 2]


def test_timm_offline_and_unknown_names(offline):
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        build_encoder(BackboneConfig(name="timm:vit_small_patch14_dinov2.lvd142m"))
    assert time.perf_counter() - t0 < 5.0
    assert "download model.safetensors from https://huggingface.co/timm/" \
           "vit_small_patch14_dinov2.lvd142m" in str(err.value)
    assert "--set backbone.weights=" in str(err.value)
    with pytest.raises(ConfigError, match="unknown timm model 'resnt18'.*resnet18"):
        build_encoder(BackboneConfig(name="timm:resnt18"))
    with pytest.raises(ConfigError, match="unknown timm pretrained tag.*resnet18.a1_in1k"):
        build_encoder(BackboneConfig(name="timm:resnet18.bogus"))


def test_hub_reachable_decides_quickly(monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for key in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # any HTTP answer (here 501 to HEAD) means reachable
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_reachable()
        assert "HF_HUB_OFFLINE" not in os.environ
    finally:
        server.shutdown()
        server.server_close()
    t0 = time.perf_counter()
    assert not hub_reachable()  # same port, now closed
    assert time.perf_counter() - t0 < 3.0
    # the answer is the call's own: nothing process-wide is switched off
    assert "HF_HUB_OFFLINE" not in os.environ and hc.HF_HUB_OFFLINE is False


# --- torch: ----------------------------------------------------------------------------

class UserNet(nn.Module):
    """Conv stride 8 then flatten: the feature dim depends on the input size."""

    ldifs_layers = {"body.0": 1}

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU())

    def forward(self, x):
        return self.body(x).flatten(1)


def make_user_net():
    return UserNet()


def not_a_module():
    return 42


@pytest.mark.parametrize("form", ["file", "dotted"])
def test_torch_user_module(form, tmp_path):
    target = __file__ if form == "file" else __name__
    torch.manual_seed(5)
    ref = UserNet()
    torch.save(ref.state_dict(), tmp_path / "user.pt")
    cfg = BackboneConfig(name=f"torch:{target}:make_user_net", weights=str(tmp_path / "user.pt"))
    enc = build_encoder(cfg)
    assert enc.input_size == 224 and enc.mean == IMAGENET_MEAN
    assert enc.feature_dim == 4 * (224 // 8) ** 2
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(enc(x), ref(x))
    assert enc.ldifs_layers == {"model.body.0": 1}
    assert fire_hooks(enc, x) == {"model.body.0": (2, 4, 28, 28)}
    torch.testing.assert_close(copy.deepcopy(enc)(x), ref(x))  # teachers are deep copies

    small = build_encoder(BackboneConfig(name=f"torch:{target}:make_user_net", input_size=32,
                                         mean=[0.1, 0.2, 0.3]))
    assert small.feature_dim == 4 * 4 * 4 and small(torch.zeros(1, 3, 32, 32)).shape == (1, 64)
    assert small.mean == (0.1, 0.2, 0.3) and image_transform(small)(
        torch.zeros(3, 50, 50, dtype=torch.uint8)).shape == (3, 32, 32)


def test_torch_user_module_errors(tmp_path):
    with pytest.raises(ConfigError, match="no callable 'missing'"):
        build_encoder(BackboneConfig(name=f"torch:{__file__}:missing"))
    with pytest.raises(ConfigError, match="returned int, not a torch.nn.Module"):
        build_encoder(BackboneConfig(name=f"torch:{__file__}:not_a_module"))
    with pytest.raises(ConfigError, match="module file not found"):
        build_encoder(BackboneConfig(name=f"torch:{tmp_path / 'none.py'}:f"))
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg_xyz'"):
        build_encoder(BackboneConfig(name="torch:no_such_pkg_xyz:f"))
    with pytest.raises(ConfigError, match="torch:<module>:<factory>"):
        build_encoder(BackboneConfig(name="torch:just_a_name"))
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="wrong.pt"):
        build_encoder(BackboneConfig(name=f"torch:{__file__}:make_user_net",
                                     weights=str(tmp_path / "wrong.pt")))
