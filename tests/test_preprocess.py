"""open_clip backbones preprocess with open_clip's own evaluation transform (bicubic)."""
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import to_pil_image

from proxyfda_cl.config import BackboneConfig
from proxyfda_cl.models import build_encoder, image_transform


@pytest.mark.slow
def test_openclip_uses_its_own_bicubic_transform_on_pil_and_tensor_images():
    enc = build_encoder(BackboneConfig(name="openclip:ViT-B-32", weights="random"))
    resize = enc.preprocess.transforms[0]
    assert resize.interpolation == InterpolationMode.BICUBIC
    img = (torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    tf = image_transform(enc)
    a, b = tf(img), tf(to_pil_image(img))
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    assert torch.equal(a, enc.preprocess(to_pil_image(img)))
    batch = tf(torch.stack([img, img.flip(2)]))  # streams preprocess whole batches
    assert batch.shape == (2, 3, 224, 224) and torch.equal(batch[0], a)


def test_other_encoders_keep_the_rebuilt_transform():
    enc = build_encoder(BackboneConfig(name="timm:resnet18", weights="random", input_size=32))
    assert getattr(enc, "preprocess", None) is None
    x = image_transform(enc)((torch.rand(3, 20, 20) * 255).to(torch.uint8))
    assert x.shape == (3, 32, 32)
