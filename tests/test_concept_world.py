"""The concept world: determinism, labels that match the pixels, tasks and subsets."""
import pytest
import torch

from proxyfda_cl.benchmarks.base import load_dataset
from proxyfda_cl.benchmarks.concept_world import ATTRIBUTES, COLOURS, generate, task_labels
from proxyfda_cl.benchmarks.streams import load_task


def test_deterministic_for_a_seed():
    a, la = generate(64, seed=3)
    b, lb = generate(64, seed=3)
    c, _ = generate(64, seed=4)
    assert torch.equal(a, b) and all(torch.equal(la[k], lb[k]) for k in la)
    assert not torch.equal(a, c)
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.uint8


@pytest.mark.slow
def test_every_attribute_is_labelled_and_balanced():
    _, labels = generate(3000, seed=0)
    assert set(labels) == set(ATTRIBUTES)
    for name, vocab in ATTRIBUTES.items():
        counts = torch.bincount(labels[name], minlength=len(vocab)).float()
        assert len(counts) == len(vocab)
        assert counts.min() > 0.7 * counts.mean()


def test_colour_label_matches_the_pixels():
    """Foreground pixels that differ most from the background carry the labelled hue."""
    imgs, labels = generate(400, seed=1)
    x = imgs.float() / 255
    # The brightest-saturation pixel of each image lies on the shape (backgrounds are dull).
    sat = x.amax(1) - x.amin(1)
    idx = sat.flatten(1).argmax(1)
    rgb = x.flatten(2)[torch.arange(len(x)), :, idx]
    mx, mn = rgb.amax(1), rgb.amin(1)
    r, g, b = rgb.unbind(1)
    hue = torch.where(mx == r, (g - b) / (mx - mn + 1e-6) % 6,
                      torch.where(mx == g, (b - r) / (mx - mn + 1e-6) + 2, (r - g) / (mx - mn + 1e-6) + 4)) * 60
    nearest = torch.remainder(torch.round(hue / 60), len(COLOURS)).long()
    assert (nearest == labels["colour"]).float().mean() > 0.8


def test_tasks_combinations_and_subsets():
    _, labels = generate(100, seed=2)
    y, names = task_labels(labels, "shape+colour")
    assert len(names) == len(ATTRIBUTES["shape"]) * len(ATTRIBUTES["colour"])
    assert torch.equal(y, labels["shape"] * len(ATTRIBUTES["colour"]) + labels["colour"])
    task = load_dataset("concept:texture", root="", seed=0, image_size=16)
    assert task.num_classes == 4 and task.train[0][0].shape == (3, 16, 16)
    assert torch.equal(task.train_targets, torch.tensor([task.train[i][1] for i in range(len(task.train))]))
    sub = load_task("concept:shape[1,3]", root="", download=False, seed=0, image_size=16)
    assert sub.classes == ["square", "cross"] and set(sub.train_targets.tolist()) == {0, 1}
