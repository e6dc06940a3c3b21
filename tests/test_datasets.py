"""Real-format loading of torchvision data sets and image folders, on small files written here."""
from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
import socket

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from proxyfda_cl.benchmarks import imagefolder as imf  # noqa: F401  (registers imagefolder)
from proxyfda_cl.benchmarks import torchvision_sets as tvs
from proxyfda_cl.benchmarks.base import load_dataset
from proxyfda_cl.benchmarks.splits import long_tail, train_val_split
from proxyfda_cl.core.errors import DataError


class NetworkBlocked(OSError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with name resolution and socket connections failing."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def check_task(task, n_train, n_test, classes, size, coded=False):
    """Shape, mode, label and target agreement of every item; ``coded``: images were written by
    ``save_img(..., 40 * label)``, so the label can be read back from the red channel."""
    assert list(task.classes) == list(classes)
    assert task.train_targets.dtype == torch.int64 and task.test_targets.dtype == torch.int64
    assert (len(task.train), len(task.test)) == (n_train, n_test)
    for ds, targets in ((task.train, task.train_targets), (task.test, task.test_targets)):
        labels = []
        for i in range(len(ds)):
            img, y = ds[i]
            assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == size
            assert isinstance(y, int)
            if coded:
                assert round(np.asarray(img)[0, 0, 0] / 40) == y
            labels.append(y)
        assert labels == targets.tolist()


def save_img(path, value, size=(8, 6), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fill = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, fill).save(path)


# ---------------------------------------------------------------- MNIST family (idx files)

def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, n, (img_name, lab_name) in (("train", n_train, tvs.IDX_FILES["train"]),
                                           ("test", n_test, tvs.IDX_FILES["test"])):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        for name, arr in ((img_name, images), (lab_name, labels)):
            data = idx_bytes(arr)
            if gz:
                with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                    f.write(data)
            else:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(data)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_raw_and_gz(tmp_path, gz):
    data = write_idx_set(tmp_path / "MNIST" / "raw", gz=gz)
    task = load_dataset("mnist", root=str(tmp_path))
    check_task(task, 12, 5, tvs.tvd.MNIST.classes, (28, 28))
    assert task.train_targets.tolist() == (np.arange(12) % 10).tolist()
    img, _ = task.test[3]
    expected = data["test"][0][3]
    assert np.array_equal(np.asarray(img), np.repeat(expected[:, :, None], 3, axis=2))


def test_read_idx_matches_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    write_idx_set(tmp_path, n_train=7, n_test=3)
    raw_img = str(tmp_path / "train-images-idx3-ubyte")
    raw_lab = str(tmp_path / "train-labels-idx1-ubyte")
    assert torch.equal(tvs.read_idx(raw_img), read_image_file(raw_img))
    assert torch.equal(tvs.read_idx(raw_lab).long(), read_label_file(raw_lab))
    with gzip.open(raw_img + ".gz", "wb") as f, open(raw_img, "rb") as g:
        f.write(g.read())
    assert torch.equal(tvs.read_idx(raw_img + ".gz"), read_image_file(raw_img))


def test_read_idx_rejects_truncated_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DataError, match="truncated"):
        tvs.read_idx(str(path))


def test_fashion_mnist_from_root(tmp_path, monkeypatch):
    monkeypatch.setitem(tvs.SYSTEM_DIRS, "fashion_mnist", [str(tmp_path / "system")])
    write_idx_set(tmp_path / "system", n_train=3, n_test=3, gz=True, seed=1)
    write_idx_set(tmp_path / "root" / "FashionMNIST" / "raw", n_train=11, n_test=4)
    task = load_dataset("fashion_mnist", root=str(tmp_path / "root"))  # the root copy wins
    check_task(task, 11, 4, tvs.tvd.FashionMNIST.classes, (28, 28))
    assert task.classes[9] == "Ankle boot"


def test_fashion_mnist_falls_back_to_system_folder(tmp_path, monkeypatch):
    data = write_idx_set(tmp_path / "system", n_train=9, n_test=6, gz=True, seed=2)
    monkeypatch.setitem(tvs.SYSTEM_DIRS, "fashion_mnist", [str(tmp_path / "system")])
    task = load_dataset("fashion_mnist", root=str(tmp_path / "empty"))
    check_task(task, 9, 6, tvs.tvd.FashionMNIST.classes, (28, 28))
    assert np.array_equal(np.asarray(task.train[4][0])[:, :, 0], data["train"][0][4])


def test_default_system_folder_is_debians():
    assert tvs.SYSTEM_DIRS["fashion_mnist"] == ["/usr/share/datasets/fashion-mnist"]


@pytest.mark.skipif(not os.path.isfile("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_package(tmp_path):
    task = load_dataset("fashion_mnist", root=str(tmp_path))
    assert (len(task.train), len(task.test)) == (60000, 10000)
    assert task.test_targets.bincount().tolist() == [1000] * 10
    assert task.train[0][0].mode == "RGB" and task.train[0][1] == task.train_targets[0] == 9


def test_mnist_missing_is_one_line_data_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", root=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "benchmark.download=true" in msg and "train-images-idx3-ubyte" in msg


# ---------------------------------------------------------------- CIFAR (python pickles)

def cifar_rows(labels, rng):
    return rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8)


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.mark.parametrize("download", [False, True])
def test_cifar10_pickles(tmp_path, download):
    rng = np.random.default_rng(0)
    base = tmp_path / "cifar-10-batches-py"
    names = [f"class{i}" for i in range(10)]
    train_labels = []
    for b in range(1, 6):
        labels = [(b + j) % 10 for j in range(3)]
        train_labels += labels
        dump(base / f"data_batch_{b}", {"batch_label": f"batch {b}", "labels": labels,
                                         "data": cifar_rows(labels, rng), "filenames": ["x"] * 3})
    test_rows = cifar_rows([0, 1, 2, 3], rng)
    dump(base / "test_batch", {"labels": [3, 2, 1, 0], "data": test_rows})
    dump(base / "batches.meta", {"label_names": names, "num_cases_per_batch": 3})
    task = load_dataset("cifar10", root=str(tmp_path), download=download)  # files on disk: used as is
    check_task(task, 15, 4, names, (32, 32))
    assert task.train_targets.tolist() == train_labels
    img = np.asarray(task.test[1][0])  # rows are channel-major: R plane, G plane, B plane
    assert np.array_equal(img, test_rows[1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar100_pickles_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-100-python"
    fine = [0, 99, 5, 42, 7, 99]
    dump(base / "train", {"fine_labels": fine, "coarse_labels": [0] * 6, "data": cifar_rows(fine, rng)})
    dump(base / "test", {"fine_labels": [1, 2], "coarse_labels": [3, 4], "data": cifar_rows([1, 2], rng)})
    names = [f"fine{i}" for i in range(100)]
    dump(base / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]})
    task = load_dataset("cifar100", root=str(tmp_path))
    check_task(task, 6, 2, names, (32, 32))
    assert task.train_targets.tolist() == fine and task.num_classes == 100


def test_cifar_incomplete_download_false_no_network(tmp_path):
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_1", {"labels": [0], "data": np.zeros((1, 3072), np.uint8)})
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root=str(tmp_path), download=False)
    assert "\n" not in str(e.value) and "cifar-10-batches-py" in str(e.value)


def test_download_true_without_network_is_data_error(tmp_path):
    with pytest.raises(DataError, match="could not download") as e:
        load_dataset("cifar10", root=str(tmp_path), download=True)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- SVHN (.mat)

@pytest.mark.parametrize("sub,download", [("svhn", False), ("", False), ("svhn", True)])
def test_svhn_mat(tmp_path, sub, download):
    rng = np.random.default_rng(3)
    folder = tmp_path / sub if sub else tmp_path
    folder.mkdir(exist_ok=True)
    y_train = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    x_train = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    scipy.io.savemat(folder / "train_32x32.mat", {"X": x_train, "y": y_train})
    scipy.io.savemat(folder / "test_32x32.mat", {"X": x_train[..., :2], "y": y_train[:2]})
    task = load_dataset("svhn", root=str(tmp_path), download=download)
    check_task(task, 5, 2, [str(i) for i in range(10)], (32, 32))
    assert task.train_targets.tolist() == [0, 1, 2, 0, 9]
    assert np.array_equal(np.asarray(task.train[2][0]), x_train[..., 2])


# ---------------------------------------------------------------- folder-based torchvision sets

def test_eurosat_layout_seeded_80_20(tmp_path):
    names = ["AnnualCrop", "Forest", "River"]
    for c, name in enumerate(names):
        for i in range(10):
            save_img(str(tmp_path / "eurosat" / "2750" / name / f"{name}_{i}.jpg"), 40 * c, size=(16, 16))
    task = load_dataset("eurosat", root=str(tmp_path))
    check_task(task, 24, 6, names, (16, 16), coded=True)
    assert task.test_targets.bincount().tolist() == [2, 2, 2]
    again = load_dataset("eurosat", root=str(tmp_path), seed=5)
    assert task.train.base.indices == again.train.base.indices
    assert not set(task.train.base.indices) & set(task.test.base.indices)


def test_gtsrb_layout(tmp_path):
    base = tmp_path / "gtsrb"
    for c in range(3):
        for i in range(2):
            save_img(str(base / "GTSRB" / "Training" / f"{c:05d}" / f"00000_{i:05d}.ppm"), 40 * c, size=(9, 7))
    rows = [("00000.ppm", 2), ("00001.ppm", 0), ("00002.ppm", 2)]
    for fname, _ in rows:
        save_img(str(base / "GTSRB" / "Final_Test" / "Images" / fname), 40 * _, size=(9, 7))
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        for fname, c in rows:
            w.writerow([fname, 9, 7, 0, 0, 8, 6, c])
    task = load_dataset("gtsrb", root=str(tmp_path))
    check_task(task, 6, 3, ["00000", "00001", "00002"], (9, 7), coded=True)
    assert task.train_targets.tolist() == [0, 0, 1, 1, 2, 2] and task.test_targets.tolist() == [2, 0, 2]


def test_dtd_train_plus_val(tmp_path):
    data = tmp_path / "dtd" / "dtd"
    split_lines = {"train1": ["banded/a.jpg", "dotted/b.jpg"], "val1": ["dotted/c.jpg"],
                   "test1": ["banded/d.jpg", "dotted/e.jpg"]}
    os.makedirs(data / "labels")
    for split, lines in split_lines.items():
        (data / "labels" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            save_img(str(data / "images" / line), 40 * line.startswith("dotted"), size=(10, 12), mode="L")
    task = load_dataset("dtd", root=str(tmp_path))  # val1 lists only "dotted": its label must still be 1
    check_task(task, 3, 2, ["banded", "dotted"], (10, 12), coded=True)
    assert task.train_targets.tolist() == [0, 1, 1] and task.test_targets.tolist() == [0, 1]


def test_flowers102_mat_files_train_plus_val(tmp_path):
    base = tmp_path / "flowers-102"
    labels = np.array([1, 2, 102, 1, 2, 5])  # 1-based, image ids 1..6
    for i in range(1, 7):
        save_img(str(base / "jpg" / f"image_{i:05d}.jpg"), 40 * (i - 1), size=(11, 5))  # codes the id
    scipy.io.savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                          "tstid": np.array([[5, 6]])})
    task = load_dataset("flowers102", root=str(tmp_path))
    check_task(task, 4, 2, tvs.tvd.Flowers102.classes, (11, 5))
    assert [round(np.asarray(task.train[i][0])[0, 0, 0] / 40) for i in range(4)] == [0, 1, 2, 3]
    assert task.train_targets.tolist() == [0, 1, 101, 0] and task.test_targets.tolist() == [1, 4]


def test_food101_json_meta(tmp_path):
    base = tmp_path / "food-101"
    meta = {"train": {"pizza": ["pizza/1", "pizza/2"], "apple_pie": ["apple_pie/3"]},
            "test": {"pizza": ["pizza/4"]}}
    os.makedirs(base / "meta")
    for split, m in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(m))
        for paths in m.values():
            for p in paths:
                save_img(str(base / "images" / f"{p}.jpg"), 40 * p.startswith("pizza"), size=(6, 6))
    task = load_dataset("food101", root=str(tmp_path))  # test lists only pizza: its label must stay 1
    check_task(task, 3, 1, ["apple_pie", "pizza"], (6, 6), coded=True)
    assert task.train_targets.tolist() == [1, 1, 0] and task.test_targets.tolist() == [1]


def test_oxford_pets_annotations(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    rows = {"trainval": [("Abyssinian_1", 1, 1), ("basset_hound_2", 2, 2)],
            "test": [("basset_hound_3", 2, 2), ("Abyssinian_4", 1, 1)]}
    os.makedirs(base / "annotations")
    for split, rs in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{i} {c} {s} 1\n" for i, c, s in rs))
        for image_id, _, _ in rs:
            save_img(str(base / "images" / f"{image_id}.jpg"), 40 * image_id.startswith("basset"), size=(5, 7))
    task = load_dataset("oxford_pets", root=str(tmp_path))
    check_task(task, 2, 2, ["Abyssinian", "Basset Hound"], (5, 7), coded=True)
    assert task.test_targets.tolist() == [1, 0]


def test_fgvc_aircraft_trainval(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    os.makedirs(data)
    (data / "variants.txt").write_text("707-320\nA300B4\nF-16A/B\n")
    (data / "images_variant_trainval.txt").write_text("0001 A300B4\n0002 F-16A/B\n0003 707-320\n")
    (data / "images_variant_test.txt").write_text("0004 F-16A/B\n")
    for i, label in enumerate([1, 2, 0, 2], start=1):
        save_img(str(data / "images" / f"{i:04d}.jpg"), 40 * label, size=(8, 8))
    task = load_dataset("fgvc_aircraft", root=str(tmp_path))
    check_task(task, 3, 1, ["707-320", "A300B4", "F-16A/B"], (8, 8), coded=True)
    assert task.train_targets.tolist() == [1, 2, 0] and task.test_targets.tolist() == [2]


def mat_annotations(rows):
    """A MATLAB struct array with ``fname`` and 1-based ``class`` fields, as Stanford Cars ships."""
    a = np.zeros((len(rows),), dtype=[("bbox_x1", "O"), ("fname", "O"), ("class", "O")])
    for i, (fname, c) in enumerate(rows):
        a[i] = (np.array([[1]]), fname, np.array([[c]], dtype=np.uint8))
    return {"annotations": a[None, :]}


@pytest.mark.parametrize("download", [False, True])
def test_stanford_cars_devkit(tmp_path, download):
    base = tmp_path / "stanford_cars"
    os.makedirs(base / "devkit")
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat",
                     mat_annotations([("00001.jpg", 2), ("00002.jpg", 1), ("00003.jpg", 3)]))
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", mat_annotations([("00001.jpg", 3), ("00002.jpg", 1)]))
    names = np.empty((1, 3), dtype=object)
    names[0] = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    for folder, labels in (("cars_train", [2, 1, 3]), ("cars_test", [3, 1])):
        for i, c in enumerate(labels, start=1):
            save_img(str(base / folder / f"{i:05d}.jpg"), 40 * (c - 1), size=(6, 4))
    task = load_dataset("stanford_cars", root=str(tmp_path), download=download)  # never downloads
    check_task(task, 3, 2, list(names[0]), (6, 4), coded=True)
    assert task.train_targets.tolist() == [1, 0, 2] and task.test_targets.tolist() == [2, 0]


@pytest.mark.parametrize("name,path", [("svhn", "svhn"), ("eurosat", "eurosat/2750"), ("gtsrb", "gtsrb"),
                                       ("dtd", "dtd"), ("flowers102", "flowers-102"),
                                       ("stanford_cars", "stanford_cars"), ("cifar100", "cifar-100-python"),
                                       ("fgvc_aircraft", "fgvc-aircraft-2013b"), ("food101", "food-101"),
                                       ("oxford_pets", "oxford-iiit-pet"), ("fashion_mnist", "FashionMNIST/raw")])
def test_missing_sets_name_path_and_fix(tmp_path, monkeypatch, name, path):
    monkeypatch.setitem(tvs.SYSTEM_DIRS, "fashion_mnist", [])
    with pytest.raises(DataError) as e:
        load_dataset(name, root=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(name) and str(tmp_path / path) in msg
    assert "place" in msg


# ---------------------------------------------------------------- image folders

def test_imagefolder_with_train_test(tmp_path):
    for split, counts in (("train", {"cat": 3, "dog": 2}), ("test", {"dog": 2})):
        for c, n in counts.items():
            for i in range(n):
                save_img(str(tmp_path / split / c / f"{i}.png"), 40 * i, size=(12, 9),
                         mode="L" if c == "cat" else "RGB")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    task = load_dataset(f"imagefolder:{tmp_path}", root="/unused")
    check_task(task, 5, 2, ["cat", "dog"], (12, 9))
    assert task.train_targets.tolist() == [0, 0, 0, 1, 1] and task.test_targets.tolist() == [1, 1]
    assert task.name == f"imagefolder:{tmp_path}"


def test_imagefolder_relative_to_root(tmp_path):
    for c in ("a", "b"):
        for i in range(5):
            save_img(str(tmp_path / "sets" / "mine" / c / f"{i}.jpg"), 10, size=(4, 4))
    task = load_dataset("imagefolder:mine", root=str(tmp_path / "sets"))
    check_task(task, 8, 2, ["a", "b"], (4, 4))


def test_imagefolder_flat_split_is_stratified_and_fixed(tmp_path):
    for c, n in (("x", 10), ("y", 5), ("z", 20)):
        for i in range(n):
            save_img(str(tmp_path / c / f"{i}.bmp"), i, size=(3, 3))
    task = load_dataset(f"imagefolder:{tmp_path}", root="", seed=0)
    check_task(task, 28, 7, ["x", "y", "z"], (3, 3))
    assert task.test_targets.bincount().tolist() == [2, 1, 4]
    other = load_dataset(f"imagefolder:{tmp_path}", root="", seed=3)
    assert [p for p, _ in task.test.samples] == [p for p, _ in other.test.samples]
    assert not {p for p, _ in task.train.samples} & {p for p, _ in task.test.samples}


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")) as e:
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", root="")
    assert "\n" not in str(e.value)
    save_img(str(tmp_path / "d" / "train" / "a" / "0.png"), 1)
    save_img(str(tmp_path / "d" / "test" / "a" / "0.png"), 1)
    save_img(str(tmp_path / "d" / "test" / "b" / "0.png"), 1)
    with pytest.raises(DataError, match="are in .* but not in"):
        load_dataset(f"imagefolder:{tmp_path / 'd'}", root="")
    save_img(str(tmp_path / "e" / "train" / "a" / "0.png"), 1)
    with pytest.raises(DataError, match="only one of train/ and test/"):
        load_dataset(f"imagefolder:{tmp_path / 'e'}", root="")
    os.makedirs(tmp_path / "f" / "empty_class")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'f'}", root="")


def test_rgb_wrapper_converts_and_uses_given_targets():
    class Grey(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Image.new("L", (3, 2), 17 * i), 99

    ds = tvs.RGBDataset(Grey(), [4, 1])
    img, y = ds[1]
    assert img.mode == "RGB" and np.asarray(img).tolist() == [[[17] * 3] * 3] * 2 and y == 1
    with pytest.raises(ValueError):
        tvs.RGBDataset(Grey(), [0])


# ---------------------------------------------------------------- splits

def test_train_val_split_stratified_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1 + [4] * 15 + [5] * 14)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    tr, va = train_val_split(y, 0.1, seed=7)
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(len(y)))
    # floor(0.1 * n_c + 0.5) per class, never a class's last item
    assert y[va].bincount(minlength=6).tolist() == [5, 3, 2, 0, 2, 1]
    tr2, va2 = train_val_split(y.numpy(), 0.1, seed=7)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    _, va3 = train_val_split(y, 0.1, seed=8)
    assert not torch.equal(va, va3)
    assert tr.dtype == torch.int64 and torch.all(tr[1:] > tr[:-1])
    with pytest.raises(ValueError):
        train_val_split(y, 1.0)


def test_long_tail_keeps_a_seeded_geometric_share_of_each_class():
    y = torch.arange(5).repeat_interleave(100)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    idx = long_tail(y, 10.0, seed=3)
    assert y[idx].bincount().tolist() == [100, 56, 32, 18, 10]  # 100 * 10 ** (-i / 4)
    assert torch.equal(idx, long_tail(y, 10.0, seed=3)) and torch.all(idx[1:] > idx[:-1])
    assert not torch.equal(idx, long_tail(y, 10.0, seed=4))
    assert torch.equal(long_tail(y, 1.0), torch.arange(len(y)))


def test_imbalanced_stream_is_long_tailed_in_training_only(tmp_path):
    from proxyfda_cl.benchmarks.streams import build_stream
    from proxyfda_cl.config import BenchmarkConfig

    def stream(imbalance):
        cfg = BenchmarkConfig(experiences=["digits[0:4]"], probes=["digits[4:8]"],
                              imbalance=imbalance, root=str(tmp_path))
        return build_stream(cfg, lambda x: x, 8, seed=0, probe_train_size=None,
                            probe_test_size=None).sets

    flat, tail = stream(1.0), stream(8.0)
    counts = tail["digits[0:4]"].train_targets.bincount().tolist()
    full = flat["digits[0:4]"].train_targets.bincount().tolist()
    assert counts[0] == full[0] and abs(counts[0] / counts[3] - 8) < 0.5
    assert counts == sorted(counts, reverse=True)
    assert torch.equal(tail["digits[0:4]"].test_targets, flat["digits[0:4]"].test_targets)
    assert torch.equal(tail["digits[4:8]"].train_targets, flat["digits[4:8]"].train_targets)
