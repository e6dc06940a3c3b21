"""``emoji:<style>``, ``emoji-x:<train_style>/<test_style>``: object concepts drawn as emoji.

Probe sets of natural object concepts built offline from registry packages, labelled by the
emoji's Unicode subgroup (``animal-mammal``, ``food-fruit``, ``transport-ground``, ...). Styles,
each source found at the path an environment variable names, else at the default places:

- ``noto``: drawn with Noto Color Emoji (Debian ``fonts-noto-color-emoji``, SIL OFL 1.1;
  ``$PROXYFDA_EMOJI_FONT``, ``FONT_PATHS``) at its 109-px bitmap size, over the emoji and
  subgroups of ``emoji-test.txt`` (Debian ``unicode-data``, Unicode licence;
  ``$PROXYFDA_EMOJI_TEST``, ``EMOJI_TEST_PATHS``); a sequence the font has no one glyph for is
  left out.
- ``google``: the 64-px PNGs and ``emoji.json`` subgroups of npm's ``emoji-datasource-google``
  (images Apache-2.0, data MIT; ``$PROXYFDA_EMOJI_DATASOURCE`` = the package folder, else
  ``<root>/node_modules/``, ``./node_modules/``, npm's global root). The same Noto artwork as
  ``noto`` (median pixel difference 2%): another source and Unicode version, not another style.
- ``twitter``: the same from ``emoji-datasource-twitter`` (Twemoji, images CC-BY 4.0, credit
  "Twemoji, Twitter Inc. and contributors"; ``$PROXYFDA_EMOJI_DATASOURCE_TWITTER``): flat
  drawings, the other style for ``emoji-x``.

Install: ``apt-get install fonts-noto-color-emoji unicode-data``, ``npm install --prefix <root>
emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0`` (``<root>``: benchmark.root).

Kept: fully-qualified emoji (``emoji-test.txt``'s status, ``emoji.json``'s ``unified``), no
skin-tone (U+1F3FB-1F3FF) or hair (U+1F9B0-1F9B3) variant, of ``SUBGROUPS``: those of Animals &
Nature, Food & Drink, Travel & Places but ``time`` (clocks), Activities and Objects; none of
Smileys & Emotion, People & Body, Component, Symbols, Flags. A subgroup with at least
``MIN_IMAGES`` (12: 8 to train, 4 to test) emoji in a style is a class of it; classes sorted by
name. Each style has its own
data's subgroups (Unicode 16 moved crab, lobster, shrimp, squid, oyster to ``animal-marine``).

Split by emoji, fixed: per class, the ``floor(0.3 n + 0.5)`` (1 to n - 1) emoji of lowest
SHA-256 of ``emoji/<TEST_SPLIT_SEED>/<codepoints but FE0F>`` are the test set. Unlike
``train_val_split``'s draw it does not depend on positions, so an emoji two styles share is on
the same side in both unless its class holds different emoji in the two.
``emoji-x:<a>/<b>`` (``emoji-x:noto/twitter``): over the classes of both, the training emoji of
``a`` (but any test emoji of ``b``) and the test emoji of ``b``: a probe must carry a concept to
other objects drawn in another style.

Cache, built on first use and then the only thing read: ``<root>/emoji/<style>/<subgroup>/
<codepoints>.png`` (lowercase hex joined by ``-``: ``1f415-200d-1f9ba.png``), RGB ``SIZE`` px,
the opaque box scaled into ``SIZE - 2 * MARGIN`` px, centred on white; ``manifest.json`` holds
sources and counts. Built in a temporary folder and renamed into place (an interrupted build
leaves none); one of another ``FORMAT``, size, subgroup list or (``noto``) text layout (libraqm or not)
is rebuilt; one process a style builds it at a time (a lock file beside it). Delete the folder to
rebuild from newer packages.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from typing import Callable, Iterator, NamedTuple, Optional

from PIL import Image

from ..core.errors import ConfigError, DataError
from .base import DATASETS, TaskData
from .imagefolder import ImageFileDataset
from .splits import TEST_SPLIT_SEED

STYLES = ("google", "noto", "twitter")
#: npm style -> the variable that names its package folder
DATASOURCE_ENV = {"google": "PROXYFDA_EMOJI_DATASOURCE", "twitter": "PROXYFDA_EMOJI_DATASOURCE_TWITTER"}
#: the Unicode subgroups kept (natural object concepts), by group
SUBGROUPS = (
    "animal-mammal", "animal-bird", "animal-amphibian", "animal-reptile", "animal-marine", "animal-bug",
    "plant-flower", "plant-other", "food-fruit", "food-vegetable", "food-prepared", "food-asian",
    "food-marine", "food-sweet", "drink", "dishware", "place-map", "place-geographic", "place-building",
    "place-religious", "place-other", "transport-ground", "transport-water", "transport-air", "hotel",
    "sky & weather", "event", "award-medal", "sport", "game", "arts & crafts", "clothing", "sound",
    "music", "musical-instrument", "phone", "computer", "light & video", "book-paper", "money", "mail",
    "writing", "office", "lock", "tool", "science", "medical", "household", "other-object")
MIN_IMAGES = 12  #: a subgroup with fewer emoji in a style is not a class of it
TEST_FRACTION = 0.3
SIZE, MARGIN = 72, 4
FORMAT = 1  #: the cache's layout version
NOTO_PX = 109  #: the one bitmap size of Noto Color Emoji's CBDT font
FONT_PATHS = tuple(f"/usr/share/fonts/{d}/NotoColorEmoji.ttf" for d in ("truetype/noto", "noto",
                                                                      "google-noto-emoji"))
EMOJI_TEST_PATHS = ("/usr/share/unicode/emoji/emoji-test.txt", "/usr/share/unicode-data/emoji-test.txt")
NPM_GLOBAL_ROOTS = ("/usr/lib/node_modules", "/usr/local/lib/node_modules")
_VARIANTS = {f"{c:X}" for c in (*range(0x1F3FB, 0x1F400), *range(0x1F9B0, 0x1F9B4))}

#: (subgroup, codepoints, a function that opens the RGBA image or returns None)
Item = tuple[str, list[str], Callable[[], Optional[Image.Image]]]


def _find(env: str, candidates: list[str], need: str, is_it: Callable[[str], bool]) -> str:
    """The first candidate ``is_it`` accepts (only ``$env`` when it is set); else ``need``."""
    if os.environ.get(env):
        candidates, where = [os.path.expanduser(os.environ[env])], f"; {env}={os.environ[env]} is not it"
    else:
        where = f" or set {env}; not in {', '.join(candidates)}"
    found = [c for c in candidates if is_it(c)]
    if not found:
        raise DataError(need + where)
    return found[0]


def _npm_global_root() -> list[str]:
    try:
        out = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):  # no npm
        return []
    return [out.stdout.strip()] if out.returncode == 0 and out.stdout.strip() else []


def find_sources(style: str, root: str) -> dict[str, str]:
    """The source files of ``style`` (see the module docstring); a one-line ``DataError``
    naming the package and its install command when one is missing."""
    if style == "noto":
        font = _find("PROXYFDA_EMOJI_FONT", list(FONT_PATHS), "emoji:noto needs Debian's "
                     "fonts-noto-color-emoji (apt-get install fonts-noto-color-emoji)", os.path.isfile)
        test = _find("PROXYFDA_EMOJI_TEST", list(EMOJI_TEST_PATHS), "emoji:noto needs Debian's "
                     "unicode-data for emoji-test.txt (apt-get install unicode-data)", os.path.isfile)
        return {"font": font, "emoji_test": test}
    env, npm = DATASOURCE_ENV[style], f"emoji-datasource-{style}"
    install = f"npm install --prefix {root} {npm}@16.0.0"
    dirs = [os.path.join(d, npm) for d in (os.path.join(root, "node_modules"),
                                           os.path.abspath("node_modules"), *NPM_GLOBAL_ROOTS)]
    is_pkg = lambda d: os.path.isfile(os.path.join(d, "emoji.json"))  # noqa: E731
    if not os.environ.get(env) and not any(map(is_pkg, dirs)):
        dirs += [p for p in (os.path.join(d, npm) for d in _npm_global_root()) if p not in dirs]
    pkg = _find(env, dirs, f"emoji:{style} needs npm's {npm} ({install})", is_pkg)
    if not os.path.isdir(os.path.join(pkg, "img", style, "64")):
        raise DataError(f"emoji:{style}: {pkg} has no img/{style}/64/ folder; install {npm}@16.0.0 ({install})")
    return {"datasource": pkg}


def _kept(subgroup: Optional[str], cps: list[str]) -> bool:
    return subgroup in SUBGROUPS and not _VARIANTS.intersection(cps)


def parse_emoji_test(path: str) -> list[tuple[str, list[str]]]:
    """``(subgroup, codepoints)`` of the fully-qualified emoji of ``emoji-test.txt`` that are
    in ``SUBGROUPS`` and no skin-tone or hair variant, in file order."""
    out, subgroup = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif line.strip() and not line.startswith("#") and ";" in line:
                cps, rest = line.split(";", 1)
                if rest.split("#", 1)[0].strip() == "fully-qualified" and _kept(subgroup, cps.split()):
                    out.append((str(subgroup), cps.upper().split()))
    return out


def _noto_renderer(font_path: str) -> Callable[[list[str]], Optional[Image.Image]]:
    """codepoints -> the RGBA rendering of their one glyph, or None (no such glyph)."""
    from PIL import ImageDraw, ImageFont, features

    raqm = features.check("raqm")  # without it, no ZWJ sequence forms its glyph (and is left out)
    try:
        font = ImageFont.truetype(font_path, NOTO_PX, layout_engine=ImageFont.Layout.RAQM
                                  if raqm else ImageFont.Layout.BASIC)
    except OSError as e:
        raise DataError(f"emoji:noto: cannot load {font_path} at {NOTO_PX} px ({e}); point "
                        f"PROXYFDA_EMOJI_FONT at the CBDT font NotoColorEmoji.ttf") from None
    advance = font.getlength("\U0001F600")

    def render(cps: list[str]) -> Optional[Image.Image]:
        text = "".join(chr(int(c, 16)) for c in cps if raqm or c != "FE0F")
        if font.getlength(text) > 1.5 * advance:  # drawn as its parts
            return None
        im = Image.new("RGBA", (2 * NOTO_PX, 2 * NOTO_PX), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((8, 8), text, font=font, embedded_color=True)
        return im

    return render


def _noto_items(src: dict[str, str]) -> Iterator[Item]:
    render = _noto_renderer(src["font"])
    for subgroup, cps in parse_emoji_test(src["emoji_test"]):
        yield subgroup, cps, (lambda cps=cps: render(cps))


def _datasource_items(src: dict[str, str], style: str) -> Iterator[Item]:
    with open(os.path.join(src["datasource"], "emoji.json"), encoding="utf-8") as f:
        data = json.load(f)
    images = os.path.join(src["datasource"], "img", style, "64")
    for e in data:  # skin tones are under "skin_variations", never read
        cps = str(e.get("unified", "")).upper().split("-")
        if e.get(f"has_img_{style}") and _kept(e.get("subcategory"), cps):
            path = os.path.join(images, str(e.get("image", "")))
            yield e["subcategory"], cps, (lambda p=path: Image.open(p) if os.path.isfile(p) else None)


def normalise(im: Image.Image) -> Optional[Image.Image]:
    """The opaque box of ``im`` scaled into ``SIZE - 2 * MARGIN`` px and centred on a white
    ``SIZE`` px RGB image; None when ``im`` is fully transparent."""
    im = im.convert("RGBA")
    box = im.getchannel("A").getbbox()
    if box is None:
        return None
    im = im.crop(box)
    scale = (SIZE - 2 * MARGIN) / max(im.size)
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    im = im.convert("RGBa").resize((w, h), Image.Resampling.LANCZOS).convert("RGBA")
    out = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 255))
    out.alpha_composite(im, ((SIZE - w) // 2, (SIZE - h) // 2))
    return out.convert("RGB")


def _raqm() -> bool:
    """Whether Pillow lays text out with libraqm (without it ``noto`` has no ZWJ sequences)."""
    from PIL import features

    return bool(features.check("raqm"))


def _manifest_ok(folder: str, style: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    fits = (m.get("format") == FORMAT and m.get("size") == SIZE
            and m.get("subgroups") == list(SUBGROUPS)
            and (style != "noto" or m.get("raqm") == _raqm()))
    return m if fits else None


def _build(style: str, root: str, folder: str) -> None:
    src = find_sources(style, root)
    items = _noto_items(src) if style == "noto" else _datasource_items(src, style)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{style}.", suffix=".tmp", dir=parent)
    try:
        counts, left_out, seen = {s: 0 for s in SUBGROUPS}, [], set()
        for subgroup, cps, load in items:
            name = "-".join(cps).lower()
            if name in seen:  # listed twice: the first subgroup has it
                continue
            seen.add(name)
            im = load()
            if im is None or (im := normalise(im)) is None:  # no glyph or no image file
                left_out.append(name)
                continue
            os.makedirs(os.path.join(tmp, subgroup), exist_ok=True)
            im.save(os.path.join(tmp, subgroup, name + ".png"))
            counts[subgroup] += 1
        manifest = {"format": FORMAT, "style": style, "size": SIZE, "subgroups": list(SUBGROUPS),
                    "sources": src, "counts": counts, "left_out": left_out}
        if style == "noto":
            manifest["raqm"] = _raqm()
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        if os.path.isdir(folder):  # an outdated cache (the caller holds the style's lock)
            old = f"{folder}.old-{os.getpid()}"
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Style(NamedTuple):
    classes: list[str]
    samples: list[tuple[str, int]]  # (path, label)
    keys: list[str]  # codepoints without FE0F, one per sample
    train: list[int]
    test: list[int]

    def pick(self, idx: list[int], label: dict[str, int], drop: set[str]) -> list[tuple[str, int]]:
        """The samples ``idx`` of the classes in ``label``, relabelled, but those in ``drop``."""
        return [(self.samples[i][0], label[self.classes[self.samples[i][1]]]) for i in idx
                if self.classes[self.samples[i][1]] in label and self.keys[i] not in drop]


def split_by_emoji(keys: list[str], targets: list[int]) -> tuple[list[int], list[int]]:
    """``(train, test)`` sorted indices: per class, the emoji of lowest hash are the test set
    (see the module docstring)."""
    rank = lambda i: hashlib.sha256(f"emoji/{TEST_SPLIT_SEED}/{keys[i]}".encode()).digest()  # noqa: E731
    train, test = [], []
    for c in sorted(set(targets)):
        idx = sorted((i for i, y in enumerate(targets) if y == c), key=rank)
        k = min(max(1, math.floor(TEST_FRACTION * len(idx) + 0.5)), len(idx) - 1)
        test += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(test)


def load_style(style: str, root: str) -> _Style:
    """The classes, images and split of ``style``, building its cache on first use."""
    if style not in STYLES:
        what = f"emoji:{style}: unknown emoji style {style!r}" if style else "emoji needs a style"
        raise ConfigError(f"benchmark.experiences/probes: {what}; choose one of: {', '.join(STYLES)} "
                          f"(as emoji:noto)")
    root = os.path.expanduser(str(root))
    folder = os.path.join(root, "emoji", style)
    manifest = _manifest_ok(folder, style)
    if manifest is None:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        # one builder a style at a time (sweep workers meet a missing or outdated cache at once)
        with open(os.path.join(os.path.dirname(folder), f".{style}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                manifest = _manifest_ok(folder, style)  # built while this one waited
                if manifest is None:
                    _build(style, root, folder)
                    manifest = _manifest_ok(folder, style)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        if manifest is None:
            raise DataError(f"emoji:{style}: the cache {folder} was built but does not read "
                            f"back; delete {folder} to rebuild it")
    files = {s: sorted(f for f in os.listdir(os.path.join(folder, s)) if f.endswith(".png"))
             if os.path.isdir(os.path.join(folder, s)) else [] for s in SUBGROUPS}
    wrong = [s for s in SUBGROUPS if len(files[s]) != manifest["counts"].get(s)]
    if wrong:
        raise DataError(f"emoji:{style}: the cache {folder} does not match its manifest.json "
                        f"({', '.join(wrong)}); delete {folder} to rebuild it")
    classes = sorted(s for s in SUBGROUPS if len(files[s]) >= max(2, MIN_IMAGES))
    if not classes:
        raise DataError(f"emoji:{style}: no subgroup has {MIN_IMAGES} emoji in {folder}; "
                        f"delete it to rebuild it from complete packages")
    samples = [(os.path.join(folder, s, f), y) for y, s in enumerate(classes) for f in files[s]]
    keys = ["-".join(c for c in os.path.basename(p)[:-4].split("-") if c != "fe0f") for p, _ in samples]
    train, test = split_by_emoji(keys, [y for _, y in samples])
    return _Style(classes, samples, keys, train, test)


def _task(name: str, classes: list[str], train: list, test: list) -> TaskData:
    tr, te = ImageFileDataset(train), ImageFileDataset(test)
    return TaskData(name=name, train=tr, test=te, classes=classes,
                    train_targets=tr.targets, test_targets=te.targets)


@DATASETS.register("emoji")
def emoji_dataset(spec: str = "", *, root: str = "", download: bool = False, seed: int = 0,
                  image_size: int = 32) -> TaskData:
    """``emoji:<style>`` (``noto``, ``google``, ``twitter``): object concepts labelled by subgroup.

    Args:
        spec: the style.
        root: ``benchmark.root``; the cache is ``<root>/emoji/<style>/``.
        download: unused (the sources are installed packages; nothing touches the network).
        seed: unused (the split is fixed, see the module docstring).
        image_size: unused (the cache is ``SIZE`` px; the runner resizes).
    """
    s = load_style(spec, root)
    label = {c: i for i, c in enumerate(s.classes)}
    return _task(f"emoji:{spec}", s.classes, s.pick(s.train, label, set()), s.pick(s.test, label, set()))


@DATASETS.register("emoji-x")
def emoji_cross_dataset(spec: str = "", *, root: str = "", download: bool = False, seed: int = 0,
                        image_size: int = 32) -> TaskData:
    """``emoji-x:<train_style>/<test_style>``: train emoji of one style, test emoji of the other,
    over the classes of both (arguments as ``emoji_dataset``)."""
    a, sep, b = spec.partition("/")
    if not sep or a not in STYLES or b not in STYLES:
        raise ConfigError(f"benchmark.experiences/probes: emoji-x:{spec}: write emoji-x:<train style>/"
                          f"<test style> with styles {', '.join(STYLES)}, as emoji-x:noto/twitter")
    sa, sb = load_style(a, root), load_style(b, root)
    classes = sorted(set(sa.classes) & set(sb.classes))
    if not classes:
        raise DataError(f"emoji-x:{spec}: the styles share no class")
    label = {c: i for i, c in enumerate(classes)}
    test = sb.pick(sb.test, label, set())
    train = sa.pick(sa.train, label, {sb.keys[i] for i in sb.test if sb.classes[sb.samples[i][1]] in label})
    empty = sorted(set(classes) - {classes[y] for _, y in train})
    if empty:
        raise DataError(f"emoji-x:{spec}: no training emoji left in {', '.join(empty)}")
    return _task(f"emoji-x:{spec}", classes, train, test)
