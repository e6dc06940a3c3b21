"""``emoji:<style>`` and ``emoji-x:<a>/<b>`` on sources written here in the real formats (an
``emoji-test.txt``, an npm ``emoji-datasource-google`` folder), and on the real packages where
they are installed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from proxyfda_cl.benchmarks import emoji
from proxyfda_cl.benchmarks.base import DATASETS, load_dataset
from proxyfda_cl.benchmarks.streams import load_task
from proxyfda_cl.core.errors import ConfigError, DataError

NPM_GLOBAL_ROOT = emoji._npm_global_root
ENVS = ("PROXYFDA_EMOJI_FONT", "PROXYFDA_EMOJI_TEST", *emoji.DATASOURCE_ENV.values())
#: the caller's own settings, for the test on the real packages
REAL_ENV = {k: os.environ[k] for k in ENVS if os.environ.get(k)}

#: (group, subgroup, [(codepoints, status)]) in emoji-test.txt's order
EMOJI_TEST = [
    ("Smileys & Emotion", "face-smiling", [("1F600", "fully-qualified"), ("1F603", "fully-qualified"),
                                            ("1F604", "fully-qualified")]),
    ("People & Body", "hand-fingers-open", [("1F44B", "fully-qualified"), ("1F44B 1F3FB", "fully-qualified"),
                                             ("1F590 FE0F", "fully-qualified"), ("1F590", "unqualified")]),
    ("Component", "skin-tone", [("1F3FB", "component"), ("1F3FC", "component")]),
    ("Animals & Nature", "animal-mammal", [
        ("1F435", "fully-qualified"), ("1F436", "fully-qualified"), ("1F415 200D 1F9BA", "fully-qualified"),
        ("1F43F FE0F", "fully-qualified"), ("1F43F", "unqualified"),
        ("1F43B 200D 2744 FE0F", "minimally-qualified"),  # listed only as minimally-qualified here
        ("1F436 1F3FB", "fully-qualified"),  # a skin-tone variant (made up, in a kept subgroup)
        ("1F9D1 200D 1F9B0", "fully-qualified")]),  # a hair variant
    ("Animals & Nature", "animal-bird", [("1F414", "fully-qualified"), ("1F413", "fully-qualified"),
                                         ("1F423", "fully-qualified"), ("1F424", "fully-qualified")]),
    ("Animals & Nature", "plant-flower", [("1F490", "fully-qualified"), ("1F338", "fully-qualified"),
                                          ("1F4AE", "fully-qualified")]),  # the font lacks 1F4AE
    ("Food & Drink", "food-fruit", [("1F347", "fully-qualified"), ("1F348", "fully-qualified"),
                                    ("1F349", "fully-qualified")]),
    ("Food & Drink", "food-marine", [("1F980", "fully-qualified")]),
    ("Travel & Places", "time", [("231B", "fully-qualified"), ("231A", "fully-qualified"),
                                 ("23F0", "fully-qualified")]),
    ("Symbols", "arrow", [("2B06 FE0F", "fully-qualified"), ("2B06", "unqualified"),
                          ("2197 FE0F", "fully-qualified"), ("27A1 FE0F", "fully-qualified")]),
    ("Flags", "country-flag", [("1F1FA 1F1F8", "fully-qualified"), ("1F1EC 1F1E7", "fully-qualified"),
                               ("1F1EB 1F1F7", "fully-qualified")]),
]
NO_GLYPH = {"1F4AE"}
NOTO = {"animal-bird": {"1f414", "1f413", "1f423", "1f424"},
        "animal-mammal": {"1f435", "1f436", "1f415-200d-1f9ba", "1f43f-fe0f"},
        "food-fruit": {"1f347", "1f348", "1f349"}}
#: google's emoji.json: (category, subcategory, unified, has_img_google, image file written)
GOOGLE = [("Smileys & Emotion", "face-smiling", u, True, True) for u in ("1F600", "1F603", "1F604")] + [
    ("Component", "skin-tone", "1F3FB", True, True),
    ("Animals & Nature", "animal-mammal", "1F435", True, True),
    ("Animals & Nature", "animal-mammal", "1F436", True, True),
    ("Animals & Nature", "animal-mammal", "1F415-200D-1F9BA", True, True),
    ("Animals & Nature", "animal-mammal", "1F43F-FE0F", True, True),
    ("Animals & Nature", "animal-mammal", "1F98A", False, True),  # no Google image
    ("Animals & Nature", "animal-bird", "1F414", True, True),
    ("Animals & Nature", "animal-bird", "1F413", True, True),
    ("Animals & Nature", "animal-bird", "1F423", True, False),  # its file is missing
    ("Animals & Nature", "animal-bird", "1F424", True, True),
    ("Animals & Nature", "plant-flower", "1F490", True, True),
    ("Animals & Nature", "plant-flower", "1F338", True, True),
    ("Animals & Nature", "plant-flower", "1F4AE", True, True),
    ("Food & Drink", "food-fruit", "1F347", True, True),
    ("Food & Drink", "food-fruit", "1F348", True, True),
    ("Food & Drink", "food-fruit", "1F349", True, True),
    ("Animals & Nature", "animal-marine", "1F980", True, True),
    ("Travel & Places", "time", "231B", True, True),
    ("Travel & Places", "time", "231A", True, True),
    ("Travel & Places", "time", "23F0", True, True),
] + [("Flags", "country-flag", u, True, True) for u in ("1F1FA-1F1F8", "1F1EC-1F1E7", "1F1EB-1F1F7")]
GOOGLE_KEPT = {"animal-bird": {"1f414", "1f413", "1f424"},
               "animal-mammal": {"1f435", "1f436", "1f415-200d-1f9ba", "1f43f-fe0f"},
               "food-fruit": {"1f347", "1f348", "1f349"}, "plant-flower": {"1f490", "1f338", "1f4ae"}}


def colour(cps: str) -> tuple[int, int, int, int]:
    h = hashlib.sha256(cps.replace(" ", "-").upper().encode()).digest()
    return h[0] // 2, h[1] // 2, h[2] // 2, 255


def glyph(cps: str, size: int) -> Image.Image:
    """A transparent image with a disc of a colour of the codepoints' own."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((size // 8, size // 4, size - size // 8, size - size // 8), fill=colour(cps))
    return im


def write_emoji_test(path) -> None:
    lines, group = ["# emoji-test.txt", "# Version: 15.0", ""], None
    for g, sub, rows in EMOJI_TEST:
        if g != group:
            lines += [f"# group: {g}", ""]
            group = g
        lines.append(f"# subgroup: {sub}")
        lines += [f"{cps:<55}; {status:<20}# ? E1.0 name" for cps, status in rows]
        lines += [f"# {sub} subtotal:\t\t{len(rows)}", ""]
    path.write_text("\n".join(lines) + "\n#EOF\n", encoding="utf-8")


def write_datasource(folder, style="google") -> None:
    images = folder / "img" / style / "64"
    images.mkdir(parents=True)
    entries = []
    for category, sub, unified, has_img, written in GOOGLE:
        entries.append({"unified": unified, "image": unified.lower() + ".png", "category": category,
                        "subcategory": sub, f"has_img_{style}": has_img, "non_qualified": None})
        if written:
            glyph(unified, 16).save(images / (unified.lower() + ".png"))
    dog = next(e for e in entries if e["unified"] == "1F436")  # as if dogs came in skin tones
    dog["skin_variations"] = {"1F3FB": {"unified": "1F436-1F3FB", "image": "1f436-1f3fb.png",
                                        f"has_img_{style}": True}}
    glyph("1F436-1F3FB", 16).save(images / "1f436-1f3fb.png")
    (folder / "emoji.json").write_text(json.dumps(entries))


class FakeFont:
    """Stands in for ``emoji._noto_renderer``: draws a disc per emoji, nothing for NO_GLYPH."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, font_path: str):
        assert os.path.isfile(font_path)

        def render(cps):
            self.calls += 1
            key = " ".join(cps)
            return Image.new("RGBA", (40, 40), (0, 0, 0, 0)) if key in NO_GLYPH else glyph(key, 40)

        return render


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network, and no ``npm root -g`` (each test says where the packages are)."""
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(emoji, "_npm_global_root", lambda: [])
    for env in ENVS:
        monkeypatch.delenv(env, raising=False)


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """Fake packages, named by the environment variables; minimum 3 emoji a class."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "NotoColorEmoji.ttf").write_bytes(b"not read: the renderer is faked")
    write_emoji_test(src / "emoji-test.txt")
    write_datasource(src / "emoji-datasource-google")
    font = FakeFont()
    monkeypatch.setattr(emoji, "_noto_renderer", font)
    monkeypatch.setattr(emoji, "MIN_IMAGES", 3)
    monkeypatch.setenv("PROXYFDA_EMOJI_FONT", str(src / "NotoColorEmoji.ttf"))
    monkeypatch.setenv("PROXYFDA_EMOJI_TEST", str(src / "emoji-test.txt"))
    monkeypatch.setenv("PROXYFDA_EMOJI_DATASOURCE", str(src / "emoji-datasource-google"))
    return {"src": src, "root": str(tmp_path / "data"), "font": font}


def by_class(task, split: str) -> dict[str, set[str]]:
    """class -> the codepoints (file names) of a split, checking each item against its target."""
    ds, targets = (task.train, task.train_targets) if split == "train" else (task.test, task.test_targets)
    assert targets.dtype == torch.int64 and targets.tolist() == [y for _, y in ds.samples]
    out: dict[str, set[str]] = {c: set() for c in task.classes}
    for path, y in ds.samples:
        assert os.path.basename(os.path.dirname(path)) == task.classes[y]
        out[task.classes[y]].add(os.path.basename(path)[:-4])
    return out


def union(task) -> dict[str, set[str]]:
    tr, te = by_class(task, "train"), by_class(task, "test")
    return {c: tr[c] | te[c] for c in task.classes}


def test_registered_with_the_benchmarks():
    import proxyfda_cl.benchmarks  # noqa: F401

    assert "emoji" in DATASETS and "emoji-x" in DATASETS


def test_noto_keeps_fully_qualified_object_emoji(sources):
    task = load_dataset("emoji:noto", root=sources["root"])
    assert task.name == "emoji:noto"
    # no smileys, hands, components, clocks, arrows or flags; no unqualified, minimally
    # qualified, skin-tone or hair variants; plant-flower lost 1F4AE to the font (2 < 3) and
    # food-marine has 1 emoji: both are no class
    assert list(task.classes) == ["animal-bird", "animal-mammal", "food-fruit"]
    assert union(task) == NOTO
    img, y = task.train[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (emoji.SIZE, emoji.SIZE)
    a = np.asarray(img)
    assert (a[0, 0] == 255).all() and (a[-1, -1] == 255).all() and a.std() > 0  # on white
    manifest = json.loads((sources["src"].parent / "data/emoji/noto/manifest.json").read_text())
    assert manifest["left_out"] == ["1f4ae"] and manifest["counts"]["plant-flower"] == 2


def test_google_keeps_emoji_with_images(sources):
    task = load_dataset("emoji:google", root=sources["root"])
    # has_img_google false, a missing file and the skin variations are left out
    assert list(task.classes) == ["animal-bird", "animal-mammal", "food-fruit", "plant-flower"]
    assert union(task) == GOOGLE_KEPT


def test_a_class_needs_the_minimum_in_its_style(sources, monkeypatch):
    load_dataset("emoji:google", root=sources["root"])
    monkeypatch.setattr(emoji, "MIN_IMAGES", 4)  # read when loading: the same cache serves
    assert list(load_dataset("emoji:google", root=sources["root"]).classes) == ["animal-mammal"]
    assert list(load_dataset("emoji:noto", root=sources["root"]).classes) == ["animal-bird", "animal-mammal"]


@pytest.mark.parametrize("style", ["noto", "google"])
def test_split_by_emoji_is_stratified_and_fixed(sources, style):
    task = load_dataset(f"emoji:{style}", root=sources["root"], seed=0)
    train, test = by_class(task, "train"), by_class(task, "test")
    for c in task.classes:
        n = len(train[c] | test[c])
        assert not train[c] & test[c] and len(test[c]) == min(max(1, int(0.3 * n + 0.5)), n - 1) >= 1
    again = load_dataset(f"emoji:{style}", root=sources["root"], seed=7)  # not the run's seed
    assert list(again.classes) == list(task.classes)
    assert by_class(again, "test") == test and by_class(again, "train") == train


def test_split_depends_on_the_emoji_not_their_order():
    keys = [f"1f{i:03x}" for i in range(60)]
    targets = [i % 3 for i in range(60)]
    train, test = emoji.split_by_emoji(keys, targets)
    assert sorted(train + test) == list(range(60)) and len(test) == 18  # 0.3 of 20, per class
    assert {targets[i] for i in test} == {0, 1, 2}
    order = np.random.default_rng(0).permutation(60)
    _, test2 = emoji.split_by_emoji([keys[i] for i in order], [targets[i] for i in order])
    assert {keys[order[i]] for i in test2} == {keys[i] for i in test}


def entries(folder: str) -> list:
    """What a folder holds, but the builders' lock files."""
    return sorted(n for n in os.listdir(folder) if not n.endswith(".lock"))


def test_cache_is_written_once_then_read_alone(sources, monkeypatch):
    root = sources["root"]
    first = load_dataset("emoji:noto", root=root)
    calls = sources["font"].calls
    assert calls == sum(len(v) for v in NOTO.values()) + 4  # + plant-flower's 3 and food-marine's 1
    cache = os.path.join(root, "emoji", "noto")
    assert entries(os.path.join(root, "emoji")) == ["noto"]  # no temporary folder left
    assert os.path.isfile(os.path.join(cache, "animal-mammal", "1f415-200d-1f9ba.png"))
    shutil.rmtree(sources["src"])  # the packages are gone: the cache is enough
    monkeypatch.setattr(emoji, "_noto_renderer", None)
    again = load_dataset("emoji:noto", root=root)
    assert again.train.samples == first.train.samples and again.test.samples == first.test.samples
    assert torch.equal(again.test_targets, first.test_targets)


def test_an_interrupted_build_leaves_no_cache(sources, monkeypatch):
    def broken(font_path):
        def render(cps):
            if broken.n == 5:
                raise KeyboardInterrupt
            broken.n += 1
            return glyph(" ".join(cps), 40)
        return render

    broken.n = 0
    monkeypatch.setattr(emoji, "_noto_renderer", broken)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("emoji:noto", root=sources["root"])
    assert entries(os.path.join(sources["root"], "emoji")) == []
    monkeypatch.setattr(emoji, "_noto_renderer", sources["font"])
    assert union(load_dataset("emoji:noto", root=sources["root"])) == NOTO


def test_a_cache_of_another_format_is_rebuilt(sources, monkeypatch):
    load_dataset("emoji:noto", root=sources["root"])
    monkeypatch.setattr(emoji, "FORMAT", emoji.FORMAT + 1)
    calls = sources["font"].calls
    assert union(load_dataset("emoji:noto", root=sources["root"])) == NOTO
    assert sources["font"].calls == 2 * calls
    assert entries(os.path.join(sources["root"], "emoji")) == ["noto"]


def test_a_builder_waits_for_another_and_uses_its_cache(sources):
    """Sweep workers meet a missing cache at once: one builds it, the others wait for the
    style's lock and then read what it built."""
    import fcntl
    import threading

    root = sources["root"]
    folder = os.path.join(root, "emoji", "noto")
    os.makedirs(os.path.dirname(folder))
    with open(os.path.join(root, "emoji", ".noto.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker is building
        out = {}
        waiter = threading.Thread(target=lambda: out.update(
            task=load_dataset("emoji:noto", root=root)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not os.path.isdir(folder)  # it waits, builds nothing
        emoji._build("noto", root, folder)
        calls = sources["font"].calls
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(30)
    assert union(out["task"]) == NOTO and sources["font"].calls == calls  # no second build


def test_a_changed_cache_is_an_error(sources):
    load_dataset("emoji:google", root=sources["root"])
    os.remove(os.path.join(sources["root"], "emoji", "google", "food-fruit", "1f347.png"))
    with pytest.raises(DataError, match="does not match its manifest.json"):
        load_dataset("emoji:google", root=sources["root"])


@pytest.mark.parametrize("pair", [("noto", "google"), ("google", "noto")])
def test_cross_style_trains_on_one_style_and_tests_on_the_other(sources, pair):
    a, b = pair
    root = sources["root"]
    task = load_dataset(f"emoji-x:{a}/{b}", root=root)
    sa, sb = load_dataset(f"emoji:{a}", root=root), load_dataset(f"emoji:{b}", root=root)
    assert list(task.classes) == sorted(set(sa.classes) & set(sb.classes))
    assert all(f"{os.sep}emoji{os.sep}{a}{os.sep}" in p for p, _ in task.train.samples)
    assert all(f"{os.sep}emoji{os.sep}{b}{os.sep}" in p for p, _ in task.test.samples)
    train, test = by_class(task, "train"), by_class(task, "test")
    train_a, test_b = by_class(sa, "train"), by_class(sb, "test")
    assert set.union(*train.values()).isdisjoint(set.union(*test.values()))
    for c in task.classes:
        assert test[c] == test_b[c] and train[c] and train[c] <= train_a[c]
        assert train[c] == train_a[c] - test_b[c]
    if pair == ("noto", "google"):
        # noto's birds are 4 with 1f423 to test, google's 3 (no 1f423) with 1f414 to test: a
        # training emoji of noto's is a test emoji of google's, and is left out
        assert test_b["animal-bird"] == {"1f414"} and "1f414" in train_a["animal-bird"]
        assert train["animal-bird"] == {"1f413", "1f424"}


def test_missing_packages_name_the_package_and_the_install(sources, tmp_path, monkeypatch):
    root = str(tmp_path / "fresh")
    cases = [("emoji:noto", "PROXYFDA_EMOJI_FONT", "apt-get install fonts-noto-color-emoji"),
             ("emoji:noto", "PROXYFDA_EMOJI_TEST", "apt-get install unicode-data"),
             ("emoji:google", "PROXYFDA_EMOJI_DATASOURCE", "emoji-datasource-google@16.0.0"),
             ("emoji-x:noto/twitter", "PROXYFDA_EMOJI_DATASOURCE_TWITTER", "emoji-datasource-twitter@16.0.0")]
    for name, env, install in cases:
        with monkeypatch.context() as m:
            m.setenv(env, str(tmp_path / "nowhere"))
            with pytest.raises(DataError) as e:
                load_dataset(name, root=root)
        assert install in str(e.value) and env in str(e.value) and "\n" not in str(e.value)
    # nothing set: every default place is searched and named
    for env in ("PROXYFDA_EMOJI_FONT", "PROXYFDA_EMOJI_DATASOURCE"):
        monkeypatch.delenv(env)
    monkeypatch.setattr(emoji, "FONT_PATHS", (str(tmp_path / "NotoColorEmoji.ttf"),))
    monkeypatch.setattr(emoji, "NPM_GLOBAL_ROOTS", ())
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / "other")
    with pytest.raises(DataError, match=r"fonts-noto-color-emoji \(apt-get install .*NotoColorEmoji.ttf$"):
        load_dataset("emoji:noto", root=root)
    with pytest.raises(DataError, match=rf"npm install --prefix {root} emoji-datasource-google@16.0.0"):
        load_dataset("emoji:google", root=root)
    assert not os.path.exists(os.path.join(root, "emoji", "google"))


def test_the_npm_package_is_found_under_root_and_npm_s_global_root(sources, tmp_path, monkeypatch):
    monkeypatch.delenv("PROXYFDA_EMOJI_DATASOURCE")
    monkeypatch.setattr(emoji, "NPM_GLOBAL_ROOTS", ())
    monkeypatch.chdir(tmp_path)
    glob = tmp_path / "global"
    glob.mkdir()
    shutil.move(str(sources["src"] / "emoji-datasource-google"), glob)
    monkeypatch.setattr(emoji, "_npm_global_root", lambda: [str(glob)])
    assert emoji.find_sources("google", str(tmp_path / "data")) == {
        "datasource": str(glob / "emoji-datasource-google")}
    (tmp_path / "data" / "node_modules").mkdir(parents=True)
    shutil.move(str(glob / "emoji-datasource-google"), tmp_path / "data" / "node_modules")
    assert union(load_dataset("emoji:google", root=str(tmp_path / "data"))) == GOOGLE_KEPT


def test_unknown_styles_and_specs_list_the_styles(sources):
    for name in ("emoji:apple", "emoji", "emoji-x:noto", "emoji-x:noto/apple"):
        with pytest.raises(ConfigError, match="google, noto, twitter"):
            load_dataset(name, root=sources["root"])


def test_a_class_subset_through_the_stream_loader(sources):
    task = load_task("emoji:noto[1:3]", root=sources["root"], download=False, seed=0, image_size=32)
    assert list(task.classes) == ["animal-mammal", "food-fruit"]
    assert set(task.test_targets.tolist()) == {0, 1}


def real_sources(style: str, monkeypatch) -> None:
    """Point the environment at the installed package, or skip (fail where
    ``PROXYFDA_CL_REQUIRE_EMOJI=1``: ``.ci/run`` installs the packages)."""
    from proxyfda_cl.config import BenchmarkConfig

    monkeypatch.setattr(emoji, "_npm_global_root", NPM_GLOBAL_ROOT)
    for k, v in REAL_ENV.items():
        monkeypatch.setenv(k, v)
    try:
        src = emoji.find_sources(style, os.path.expanduser(BenchmarkConfig().root))
    except DataError as e:
        if os.environ.get("PROXYFDA_CL_REQUIRE_EMOJI") == "1":
            pytest.fail(f"PROXYFDA_CL_REQUIRE_EMOJI=1 but {e}")
        pytest.skip(str(e))
    envs = {"font": "PROXYFDA_EMOJI_FONT", "emoji_test": "PROXYFDA_EMOJI_TEST",
            "datasource": emoji.DATASOURCE_ENV.get(style, "")}
    for k, path in src.items():
        monkeypatch.setenv(envs[k], path)


@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> str:
    """One cache for the tests on the real packages (noto is built once)."""
    return str(tmp_path_factory.mktemp("real"))


@pytest.mark.slow
@pytest.mark.parametrize("style", ["noto", "google", "twitter"])
def test_real_packages(style, real_root, monkeypatch):
    real_sources(style, monkeypatch)
    task = load_dataset(f"emoji:{style}", root=real_root)
    assert len(task.classes) >= 10 and list(task.classes) == sorted(task.classes)
    assert {"animal-mammal", "animal-bird", "food-fruit", "transport-ground"} <= set(task.classes)
    counts = torch.bincount(torch.cat([task.train_targets, task.test_targets]))
    assert counts.min() >= emoji.MIN_IMAGES and len(task.train) > 300 and len(task.test) > 100
    for y in range(len(task.classes)):  # one image a class, not blank
        i = int((task.test_targets == y).nonzero()[0])
        img, label = task.test[i]
        assert label == y and img.size == (emoji.SIZE, emoji.SIZE) and np.asarray(img).std() > 10
    if style != "noto":
        real_sources("noto", monkeypatch)
        cross = load_dataset(f"emoji-x:noto/{style}", root=real_root)
        assert len(cross.classes) >= 10
        names = lambda ds: {os.path.basename(p) for p, _ in ds.samples}  # noqa: E731
        assert names(cross.train).isdisjoint(names(cross.test))
