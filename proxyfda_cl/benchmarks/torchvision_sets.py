"""Real image data sets through ``torchvision.datasets``, as ``TaskData`` in RGB.

Each factory takes ``root`` (``~`` expanded) and ``download``; with ``download=False`` nothing
touches the network, and a missing data set raises a one-line ``DataError`` naming the path
expected and the fix. Files already on disk are used as they are: CIFAR, SVHN and Flowers102
check that their files exist rather than their md5 sums (a downloaded archive is still checked
against torchvision's md5). Splits are the official ones; where a data set also has a
validation split, it is merged into the training split (DTD partition 1 ``train``+``val``,
Flowers102 ``train``+``val``, FGVC-Aircraft ``trainval``, Oxford-IIIT Pets ``trainval``).
EuroSAT ships no split: a stratified 80/20 split with the fixed ``TEST_SPLIT_SEED``.
Targets come from the data sets' label lists, without decoding any image.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision import datasets as tvd
from torchvision.datasets.folder import find_classes

from ..core.errors import ConfigError, DataError
from .base import DATASETS, TaskData
from .idx import IDX_FILES, GreyIdxDataset, find_idx, read_idx
from .splits import TEST_SPLIT_SEED, train_val_split

#: Folders searched for the idx files after ``root``: Debian's ``dataset-fashion-mnist``
#: package installs Fashion-MNIST's four ``.gz`` files in ``/usr/share/datasets/fashion-mnist``.
SYSTEM_DIRS: dict[str, list[str]] = {"mnist": [], "fashion_mnist": ["/usr/share/datasets/fashion-mnist"]}

_FIX = "set --set benchmark.download=true or place the files there"
_TV_HINT = "You can use download=True to download it"


class RGBDataset(Dataset):
    """Items ``(image, targets[i])`` with the images of ``base``, PIL images converted to RGB.

    ``targets`` are the labels of ``base``'s items in order, read from its label lists (the
    label ``base`` itself returns is not used, so relabelled sets stay consistent).
    """

    def __init__(self, base: Dataset, targets: Sequence[int]) -> None:
        self.base = base
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        if len(self.targets) != len(base):  # type: ignore[arg-type]
            raise ValueError(f"{len(self.targets)} targets for {len(base)} items")  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.base[i][0]
        if isinstance(img, Image.Image) and img.mode != "RGB":
            img = img.convert("RGB")
        return img, int(self.targets[i])


def _open(name: str, where: str, download: bool, build: Callable[[], Any], fix: str = _FIX) -> Any:
    """Call ``build``, turning torchvision's not-found and download errors into a ``DataError``."""
    try:
        return build()
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        reason = " ".join(str(e).replace(_TV_HINT, "").split()) or type(e).__name__
        if download:
            raise DataError(f"{name}: could not download into {where} ({reason}); "
                            f"place the files there by hand") from e
        raise DataError(f"{name}: not found or incomplete at {where} ({reason}); {fix}") from e


def _root(root: str) -> str:
    return os.path.expanduser(str(root))


def _no_spec(name: str, spec: str) -> None:
    if spec:
        raise ConfigError(f"benchmark.experiences/probes: dataset {name!r} takes no ':<spec>' part, "
                          f"got {name}:{spec}; write {name}")


def _task(name: str, train: Dataset, test: Dataset, classes: Sequence[str],
          train_targets: Sequence[int], test_targets: Sequence[int]) -> TaskData:
    tr, te = RGBDataset(train, train_targets), RGBDataset(test, test_targets)
    for split, t in (("train", tr.targets), ("test", te.targets)):
        if len(t) == 0:
            raise DataError(f"{name}: the {split} split is empty; check the files of {name}")
        if int(t.min()) < 0 or int(t.max()) >= len(classes):
            raise DataError(f"{name}: {split} labels outside 0..{len(classes) - 1}; check the files of {name}")
    return TaskData(name=name, train=tr, test=te, classes=list(classes),
                    train_targets=tr.targets, test_targets=te.targets)


def _mnist_like(name: str, tv_cls: type, spec: str, root: str, download: bool) -> TaskData:
    """MNIST-format idx files from ``root/<Class>/raw``, a system folder, or torchvision."""
    _no_spec(name, spec)
    root = _root(root)
    raw = os.path.join(root, tv_cls.__name__, "raw")
    found = find_idx([raw] + SYSTEM_DIRS.get(name, []))
    if found is None:  # torchvision's legacy processed/*.pt files, or a download
        files = ", ".join(s for pair in IDX_FILES.values() for s in pair)
        tr, te = _open(name, raw, download, lambda: (tv_cls(root, train=True, download=download),
                                                     tv_cls(root, train=False, download=download)),
                       f"set --set benchmark.download=true or place {files} (raw or .gz) there")
        splits = {"train": (tr.data, tr.targets), "test": (te.data, te.targets)}
    else:
        splits = {s: (read_idx(found[i]), read_idx(found[l]).long()) for s, (i, l) in IDX_FILES.items()}
    train, test = (GreyIdxDataset(*splits[s]) for s in ("train", "test"))
    return _task(name, train, test, tv_cls.classes, train.targets, test.targets)


@DATASETS.register("mnist")
def mnist(spec: str = "", *, root: str, download: bool = False, seed: int = 0, image_size: int = 32) -> TaskData:
    """MNIST (60k/10k) from ``root/MNIST/raw`` idx files (raw or ``.gz``)."""
    return _mnist_like("mnist", tvd.MNIST, spec, root, download)


@DATASETS.register("fashion_mnist")
def fashion_mnist(spec: str = "", *, root: str, download: bool = False, seed: int = 0,
                  image_size: int = 32) -> TaskData:
    """Fashion-MNIST (60k/10k) from ``root/FashionMNIST/raw``, else Debian's ``/usr/share/datasets``."""
    return _mnist_like("fashion_mnist", tvd.FashionMNIST, spec, root, download)


class _CIFAR10(tvd.CIFAR10):
    """CIFAR-10 that accepts its batch and meta files when present, without md5 checks."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                   for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not os.path.isfile(path):
            raise RuntimeError(f"metadata file {path} not found")
        import pickle

        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR100(_CIFAR10, tvd.CIFAR100):
    """CIFAR-100 (fine labels) with ``_CIFAR10``'s presence checks."""


class _SVHN(tvd.SVHN):
    """SVHN that accepts its ``.mat`` file when present, without an md5 check."""

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))

    def download(self) -> None:
        if not self._check_integrity():
            super().download()


class _Flowers102(tvd.Flowers102):
    """Flowers102 that accepts its label and split files when present, without md5 checks."""

    def _check_integrity(self) -> bool:
        return self._images_folder.is_dir() and all(
            (self._base_folder / self._file_dict[k][0]).is_file() for k in ("label", "setid"))


def _cifar(name: str, cls: type, spec: str, root: str, download: bool) -> TaskData:
    _no_spec(name, spec)
    root = _root(root)
    tr, te = _open(name, os.path.join(root, cls.base_folder), download,
                   lambda: (cls(root, train=True, download=download), cls(root, train=False, download=download)))
    return _task(name, tr, te, tr.classes, tr.targets, te.targets)


@DATASETS.register("cifar10")
def cifar10(spec: str = "", *, root: str, download: bool = False, seed: int = 0, image_size: int = 32) -> TaskData:
    """CIFAR-10 (50k/10k) from ``root/cifar-10-batches-py`` (the python pickles)."""
    return _cifar("cifar10", _CIFAR10, spec, root, download)


@DATASETS.register("cifar100")
def cifar100(spec: str = "", *, root: str, download: bool = False, seed: int = 0, image_size: int = 32) -> TaskData:
    """CIFAR-100 with its 100 fine labels (50k/10k) from ``root/cifar-100-python``."""
    return _cifar("cifar100", _CIFAR100, spec, root, download)


@DATASETS.register("svhn")
def svhn(spec: str = "", *, root: str, download: bool = False, seed: int = 0, image_size: int = 32) -> TaskData:
    """SVHN cropped digits, ``train``/``test`` (not ``extra``), label 0 for digit 0.

    The ``.mat`` files are read from ``root/svhn``, or from ``root`` itself when they lie there.
    """
    _no_spec("svhn", spec)
    root = _root(root)
    where = root if os.path.isfile(os.path.join(root, "train_32x32.mat")) else os.path.join(root, "svhn")
    tr, te = _open("svhn", where, download, lambda: (_SVHN(where, split="train", download=download),
                                                    _SVHN(where, split="test", download=download)))
    return _task("svhn", tr, te, [str(i) for i in range(10)], tr.labels, te.labels)


@DATASETS.register("eurosat")
def eurosat(spec: str = "", *, root: str, download: bool = False, seed: int = 0, image_size: int = 32) -> TaskData:
    """EuroSAT RGB (10 classes, 27k images) from ``root/eurosat/2750``; stratified 80/20 split
    drawn with the fixed ``TEST_SPLIT_SEED`` (the data set has no official split)."""
    _no_spec("eurosat", spec)
    root = _root(root)
    ds = _open("eurosat", os.path.join(root, "eurosat", "2750"), download, lambda: tvd.EuroSAT(root, download=download))
    targets = torch.as_tensor(ds.targets, dtype=torch.int64)
    tr, te = train_val_split(targets, 0.2, seed=TEST_SPLIT_SEED)
    return _task("eurosat", Subset(ds, tr.tolist()), Subset(ds, te.tolist()), ds.classes, targets[tr], targets[te])


def _labels(ds: Any) -> list[int]:
    return list(ds._labels)


def _sample_labels(ds: Any) -> list[int]:
    return [int(t) for _, t in ds._samples]


def _gtsrb_classes(ds: Any) -> list[str]:
    return find_classes(str(ds._base_folder / "GTSRB" / "Training"))[0]


# name -> (folder under root, constructor(root, split, download), train splits, test split, targets, classes)
_SPLIT_SETS: dict[str, tuple] = {
    "dtd": ("dtd", lambda r, s, d: tvd.DTD(r, split=s, partition=1, download=d), ("train", "val"), "test",
            _labels, None),
    "gtsrb": ("gtsrb", lambda r, s, d: tvd.GTSRB(r, split=s, download=d), ("train",), "test",
              _sample_labels, _gtsrb_classes),
    "flowers102": ("flowers-102", lambda r, s, d: _Flowers102(r, split=s, download=d), ("train", "val"), "test",
                   _labels, None),
    "stanford_cars": ("stanford_cars", lambda r, s, d: tvd.StanfordCars(r, split=s, download=False), ("train",),
                      "test", _sample_labels, None),
    "fgvc_aircraft": ("fgvc-aircraft-2013b", lambda r, s, d: tvd.FGVCAircraft(r, split=s, download=d),
                      ("trainval",), "test", _labels, None),
    "food101": ("food-101", lambda r, s, d: tvd.Food101(r, split=s, download=d), ("train",), "test", _labels, None),
    "oxford_pets": ("oxford-iiit-pet", lambda r, s, d: tvd.OxfordIIITPet(r, split=s, download=d), ("trainval",),
                    "test", _labels, None),
}
#: Sets whose torchvision class list (and label indices) are built per split from the classes
#: present in it; their labels are mapped by class name onto the training splits' union.
_PER_SPLIT_CLASSES = {"dtd", "food101"}
#: Data sets torchvision cannot download (the original URL is gone); ``download`` is ignored.
_MANUAL_ONLY = {"stanford_cars"}


def _load_split_set(name: str, spec: str = "", *, root: str, download: bool = False, seed: int = 0,
                    image_size: int = 32) -> TaskData:
    """A torchvision data set with official splits; see the module docstring for which."""
    _no_spec(name, spec)
    folder, make, train_splits, test_split, targets_of, classes_of = _SPLIT_SETS[name]
    root, where = _root(root), os.path.join(_root(root), folder)
    fix = _FIX if name not in _MANUAL_ONLY else "place the files there (torchvision cannot download it)"
    parts, test = _open(name, where, download, lambda: (
        [make(root, s, download) for s in train_splits], make(root, test_split, download)), fix)
    if name in _PER_SPLIT_CLASSES:
        classes = sorted({c for p in parts for c in p.classes})
        index = {c: i for i, c in enumerate(classes)}
        extra = sorted(set(test.classes) - set(classes))
        if extra:
            raise DataError(f"{name}: test classes {', '.join(extra)} under {where} have no training images; "
                            f"check the annotation files")
        targets = [[index[p.classes[t]] for t in targets_of(p)] for p in parts + [test]]
    else:
        classes = classes_of(parts[0]) if classes_of else list(parts[0].classes)
        targets = [targets_of(p) for p in parts + [test]]
    train = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    return _task(name, train, test, classes, [t for ts in targets[:-1] for t in ts], targets[-1])


def _make_factory(name: str) -> Callable[..., TaskData]:
    def factory(spec: str = "", *, root: str, download: bool = False, seed: int = 0,
                image_size: int = 32) -> TaskData:
        return _load_split_set(name, spec, root=root, download=download, seed=seed, image_size=image_size)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name} from ``root/{_SPLIT_SETS[name][0]}`` in torchvision's layout; official splits."
    return factory


for _name in _SPLIT_SETS:
    DATASETS.register(_name)(_make_factory(_name))
