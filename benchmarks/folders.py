"""Labelled image folders with different numbers of kinds (3 to 50), assembled offline and cached, for a benchmark of
how well a method estimates the number of groups in a folder; and the peer pipeline practitioners use for that job.

Each folder is ``ROOT/NAME/CLASS/NNNN.{png,jpg}``: one subfolder per kind, named after it (used by the evaluation
only). Most sources are files that installed packages ship: Fashion-MNIST's test split from Debian's
``dataset-fashion-mnist`` (grey 28 px garments), scikit-learn's 8x8 digits (upscaled to grey 32 px glyphs), and the
pictures in scikit-image's and scikit-learn's data folders (colour and grey crops at a random place and scale, one
picture per kind, 40-160 px, JPEG or PNG; small-scale crops of texture-like pictures) plus the 100 faces of
scikit-image's ``lfw_subset.npy``. Two families group pictures by *what* they show, with real variation inside each
group (``sources.py`` gets them):

* ``emoji-*``: emoji by meaning (Unicode category or subcategory) as Apple, Facebook, Google and Twitter draw them,
  from the npm packages ``emoji-datasource-{apple,facebook,google,twitter}`` 16.0.0. They are fetched once with
  ``npm pack`` into ``OUT_ROOT/.sources`` (about 340 MB of tarballs), of which only ``emoji.json`` and the 64 px
  PNGs used are extracted; nothing is fetched again while the tarball or the extracted folder is there. The same
  as ``cd OUT_ROOT/.sources && npm pack emoji-datasource-google@16.0.0`` and so on.
* ``glyphs-*``: letters (either case is one group) in the Latin text fonts of Debian's font packages, which the
  builder installs with apt-get (as root) if one is missing, the same as ``apt-get install -y fonts-dejavu-core
  fonts-dejavu-extra fonts-liberation2 fonts-urw-base35 fonts-noto-core fonts-freefont-ttf fonts-croscore``; the
  ``.complete`` marker names the font files and the packages' versions.

A folder is written under a temporary name, gets a ``.complete`` marker last and is then renamed, so a folder that
exists is complete; it is rebuilt only if its seed differs. A folder is the same, byte for byte, for the same seed
and package versions (for the glyphs: the same fonts).

    .venv/bin/python benchmarks/folders.py OUT_ROOT [NAME ...] [--seed 0] [--peer]

The peer is ``clustimage`` (PyPI): grey HOG features (or pixels), PCA, Ward agglomerative clustering, the number of
clusters chosen by the silhouette over a range. It is no dependency of the package: it lives in its own virtual
environment, which ``ensure_peer_env`` makes (about 850 MB, a minute), the same as

    python3 -m venv .venv-peer && .venv-peer/bin/pip install clustimage==1.7.1

and ``peer_pipeline`` runs it there in a subprocess. ``--peer`` runs it on each folder built and prints its number
of clusters, its NMI against the subfolder labels and its time.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from sources import EMOJI_VENDORS, EMOJI_VERSION, emoji_pictures, latin_fonts

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-peer"
PEER_REQUIREMENT = "clustimage==1.7.1"
IMAGE_SUFFIXES = (".png", ".jpg")
MARKER = ".complete"

FOLDERS: dict[str, str] = {
    "fmnist-3": "3 Fashion-MNIST classes (trouser, bag, sneaker), 300 each: 900 grey 28 px PNG",
    "fmnist-5": "5 Fashion-MNIST classes (T-shirt/top, pullover, dress, sandal, ankle boot), 400 each: 2,000 28 px",
    "digits-10": "scikit-learn's 1,797 digits, 10 classes, 8x8 upscaled to grey 32 px PNG",
    "photos-5": "crops of 5 colour photographs (cat, coffee, rocket, flower, retina), 60 each: 300, 40-160 px",
    "textures-6": "small-scale crops of 6 texture-like pictures (brick, grass, gravel, moon, tissue, deep field), "
                  "80 each: 480, 32-96 px, grey and colour",
    "photos-26": "crops of 25 bundled pictures (photos, textures, drawings, scans) and 40 of 100 LFW faces, "
                 "40 each: 1,040, 40-160 px, grey and colour",
    "fmnist-10-small": "all 10 Fashion-MNIST classes, 50 each: a small folder of 500 grey 28 px",
    "mixed-20": "10 Fashion-MNIST classes and 10 digit classes, 100 each: 2,000 grey 28 and 32 px",
    "mixed-50": "10 Fashion-MNIST classes, 4 of them also turned by 90 degrees, 10 digits and the 26 kinds of "
                "photos-26, 60 each: 3,000 images of mixed sizes and modes",
    "emoji-3": "emoji of 3 categories (animals & nature, food & drink, travel & places), 50 distinct (emoji, vendor) "
               "pictures each, Apple, Facebook, Google and Twitter's: 150 colour PNG on white, 48-72 px",
    "emoji-8": "emoji of 8 categories (smileys & emotion, people & body, animals & nature, food & drink, travel & "
               "places, activities, objects, symbols), 250 each: 2,000 colour 48-72 px",
    "emoji-40": "emoji of the 40 largest subcategories (by pictures; no flags, no skin tones), 50 each: 2,000 "
                "colour 48-72 px",
    "glyphs-26": "the 26 letters, upper or lower case at random, in 106 Latin fonts of 7 Debian font packages, "
                 "white on black, turned up to 12 degrees, some blurred, 250 each: 6,500 grey 28 px",
    "glyphs-10": "the letters a-j as in glyphs-26, 60 each: a small folder of 600 grey 28 px",
}

FASHION = ("t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")

# kind name -> (package, file): "sk" scikit-image's data folder, "sl" scikit-learn's images folder
PICTURES: dict[str, tuple[str, str]] = {
    "astronaut": ("sk", "astronaut.png"), "brick": ("sk", "brick.png"), "camera": ("sk", "camera.png"),
    "cell": ("sk", "cell.png"), "cat": ("sk", "chelsea.png"), "chessboard": ("sk", "chessboard_RGB.png"),
    "clock": ("sk", "clock_motion.png"), "coffee": ("sk", "coffee.png"), "coins": ("sk", "coins.png"),
    "colour-wheel": ("sk", "color.png"), "grass": ("sk", "grass.png"), "gravel": ("sk", "gravel.png"),
    "horse": ("sk", "horse.png"), "deep-field": ("sk", "hubble_deep_field.jpg"), "tissue": ("sk", "ihc.png"),
    "logo": ("sk", "logo.png"), "moon": ("sk", "moon.png"), "motorbike": ("sk", "motorcycle_left.png"),
    "page": ("sk", "page.png"), "phantom": ("sk", "phantom.png"), "retina": ("sk", "retina.jpg"),
    "rocket": ("sk", "rocket.jpg"), "text": ("sk", "text.png"), "temple": ("sl", "china.jpg"),
    "flower": ("sl", "flower.jpg"),
}

Make = Callable[[np.random.Generator, "int | None"], list[Image.Image]]   # (rng, n) -> n images of one kind

EMOJI_CATEGORIES = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
                    "Activities", "Objects", "Symbols")
SOURCES = ".sources"                                               # OUT_ROOT/.sources: the npm tarballs, unpacked


# ---------------------------------------------------------------------------------------------------- sources
@functools.lru_cache(maxsize=None)
def fashion_test() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's test split: images ``uint8 (10000, 28, 28)``, labels ``int64 (10000,)``."""
    from deepcluster.data.fashion_mnist import FASHION_MNIST_ROOT, read_idx

    root = Path(os.environ.get("DEEPCLUSTER_FASHION_MNIST", FASHION_MNIST_ROOT))
    images, labels = (root / f"t10k-{k}-idx{n}-ubyte.gz" for k, n in (("images", 3), ("labels", 1)))
    if not images.is_file():
        raise SystemExit(f"folders: {images} not found: apt-get install dataset-fashion-mnist")
    return read_idx(images), read_idx(labels).astype(np.int64)


@functools.lru_cache(maxsize=None)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images ``uint8 (1797, 8, 8)`` scaled from 0-16 to 0-255, labels ``int64 (1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.clip(d.images * 16, 0, 255).astype(np.uint8), d.target.astype(np.int64)


@functools.lru_cache(maxsize=None)
def picture(kind: str) -> np.ndarray:
    """One bundled picture, ``uint8 (H, W)`` if grey or ``(H, W, 3)``; an alpha channel is laid on white."""
    import skimage
    import sklearn.datasets

    where, file = PICTURES[kind]
    path = Path((skimage if where == "sk" else sklearn.datasets).__file__).parent / ("data" if where == "sk"
                                                                                     else "images") / file
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
        im = im.convert("L" if im.mode in ("L", "I", "I;16") else "RGB")
        return np.asarray(im)


@functools.lru_cache(maxsize=None)
def faces() -> np.ndarray:
    """The 100 faces of scikit-image's ``lfw_subset.npy`` (its first half), ``uint8 (100, 25, 25)``."""
    import skimage

    a = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")[:100]
    return np.round(a * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- kinds
def fashion_kind(label: int, turn: int = 0) -> Make:
    """``n`` distinct test images of one Fashion-MNIST class, turned by ``turn`` x 90 degrees: grey 28x28."""
    def make(rng: np.random.Generator, n: int) -> list[Image.Image]:
        x, y = fashion_test()
        pick = rng.choice(np.flatnonzero(y == label), n, replace=False)
        return [Image.fromarray(np.ascontiguousarray(np.rot90(x[i], turn))) for i in np.sort(pick)]
    return make


def digit_kind(label: int) -> Make:
    """``n`` distinct digits of one class (all of them when ``n`` is None), upscaled bilinearly: grey 32x32."""
    def make(rng: np.random.Generator, n: int | None) -> list[Image.Image]:
        x, y = digits()
        idx = np.flatnonzero(y == label)
        pick = idx if n is None else np.sort(rng.choice(idx, n, replace=False))
        return [Image.fromarray(x[i]).resize((32, 32), Image.Resampling.BILINEAR) for i in pick]
    return make


def face_kind(rng: np.random.Generator, n: int) -> list[Image.Image]:
    """``n`` distinct LFW faces, grey, upscaled from 25 px to a random 40-100 px."""
    out = []
    for i in np.sort(rng.choice(100, n, replace=False)):
        side = int(rng.integers(40, 101))
        out.append(Image.fromarray(faces()[i]).resize((side, side), Image.Resampling.BICUBIC))
    return out


def crop(pic: np.ndarray, rng: np.random.Generator, share: tuple[float, float], longer: tuple[int, int],
         min_std: float = 8.0, tries: int = 20) -> Image.Image:
    """A crop of ``pic`` (``uint8 (H, W[, 3])``): its side a random ``share`` of the picture's shorter side, aspect
    3:4 to 4:3, at a random place, resized bicubically so its longer side is a random integer in ``longer``
    (inclusive). Crops that are nearly flat (grey std under ``min_std``) are drawn again, up to ``tries`` times."""
    h, w = pic.shape[:2]
    for _ in range(tries):
        side = rng.uniform(*share) * min(h, w)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = min(w, max(4, int(side * aspect))), min(h, max(4, int(side / aspect)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        part = pic[y0:y0 + ch, x0:x0 + cw]
        if (part if part.ndim == 2 else part.mean(axis=2)).std() >= min_std:
            break
    scale = int(rng.integers(longer[0], longer[1] + 1)) / max(cw, ch)
    size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
    return Image.fromarray(part).resize(size, Image.Resampling.BICUBIC)


def picture_kind(kind: str, share: tuple[float, float] = (0.2, 0.6), longer: tuple[int, int] = (40, 160)) -> Make:
    """``n`` crops of one bundled picture (see ``crop``), grey or colour as the picture is."""
    return lambda rng, n: [crop(picture(kind), rng, share, longer) for _ in range(n)]


def emoji_kind(pictures: list[Path]) -> Make:
    """``n`` distinct pictures of ``pictures`` (64 px RGBA PNG), laid on white, resized to a random 48-72 px: RGB."""
    def make(rng: np.random.Generator, n: int) -> list[Image.Image]:
        out = []
        for i in np.sort(rng.choice(len(pictures), n, replace=False)):
            side = int(rng.integers(48, 73))
            with Image.open(pictures[i]) as im:
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
            out.append(im.resize((side, side), Image.Resampling.LANCZOS))
        return out
    return make


@functools.lru_cache(maxsize=None)
def font(path: Path, size: int = 96) -> ImageFont.FreeTypeFont:
    """Font file ``path`` at ``size`` px, loaded once."""
    return ImageFont.truetype(str(path), size)


def glyph(path: Path, char: str, angle: float, fill: float, shift: tuple[int, int], blur: float,
          side: int = 28) -> Image.Image:
    """``char`` in font ``path``, white on black like MNIST: drawn at 96 px, turned by ``angle`` degrees, its ink
    resized so its longer side is ``fill`` of ``side`` and centred, moved by ``shift`` px (kept inside), blurred
    with a Gaussian of radius ``blur`` if it is positive: grey ``side`` x ``side``."""
    canvas = Image.new("L", (288, 288), 0)
    ImageDraw.Draw(canvas).text((144, 144), char, fill=255, font=font(path), anchor="mm")
    ink = canvas.crop(canvas.getbbox()).rotate(angle, Image.Resampling.BICUBIC, expand=True)
    ink = ink.crop(ink.getbbox())
    scale = fill * side / max(ink.size)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.Resampling.LANCZOS)
    out = Image.new("L", (side, side), 0)
    x, y = ((side - s) // 2 + d for s, d in zip(ink.size, shift))
    out.paste(ink, (min(max(x, 0), side - ink.width), min(max(y, 0), side - ink.height)))
    return out.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else out


def letter_kind(letter: str) -> Make:
    """``n`` renderings of ``letter``, upper or lower case at random, each in a random font of ``latin_fonts``,
    filling 60-90 % of the box, turned by up to 12 degrees either way, moved by up to 2 px, half of them blurred
    (radius 0.3-0.8 px): grey 28x28 (see ``glyph``)."""
    def make(rng: np.random.Generator, n: int) -> list[Image.Image]:
        fonts = latin_fonts()[0]
        out = []
        for _ in range(n):
            f, upper = int(rng.integers(len(fonts))), rng.random() < 0.5
            angle, fill = rng.uniform(-12, 12), rng.uniform(0.6, 0.9)
            shift = tuple(int(d) for d in rng.integers(-2, 3, size=2))
            blur = rng.uniform(0.3, 0.8) if rng.random() < 0.5 else 0.0
            out.append(glyph(fonts[f], letter.upper() if upper else letter, angle, fill, shift, blur))
        return out
    return make


def slug(text: str) -> str:
    """A subfolder name: "Food & Drink" -> "food-and-drink"."""
    return "-".join(text.lower().replace("&", "and").split())


def emoji_recipe(name: str, sources: Path) -> tuple[list[tuple[str, Make]], int]:
    """The kinds of an emoji folder (one per category or subcategory, see ``FOLDERS``) and its images per kind."""
    pics = emoji_pictures(Path(sources))
    by_category, by_subcategory = {}, {}
    for e in pics:
        by_category.setdefault(e.category, []).append(e.path)
        by_subcategory.setdefault(e.subcategory, []).append(e.path)
    if name == "emoji-40":
        largest = sorted(by_subcategory, key=lambda s: (-len(by_subcategory[s]), s))[:40]
        return ([(slug(s), emoji_kind(by_subcategory[s])) for s in largest],
                min(50, *(len(by_subcategory[s]) for s in largest)))
    cats, n = {"emoji-3": (("Animals & Nature", "Food & Drink", "Travel & Places"), 50),
               "emoji-8": (EMOJI_CATEGORIES, 250)}[name]
    return [(slug(c), emoji_kind(by_category[c])) for c in cats], n


def provenance(name: str) -> dict:
    """What the ``.complete`` marker records of a folder's sources beyond installed packages: the npm packages of
    the emoji folders, the font files and font packages of the glyph folders; nothing for the others."""
    if name.startswith("emoji-"):
        return {"sources": [f"emoji-datasource-{v}@{EMOJI_VERSION}" for v in EMOJI_VENDORS]}
    if name.startswith("glyphs-"):
        fonts, versions = latin_fonts()
        return {"fonts": [f.name for f in fonts], "font_packages": versions}
    return {}


def recipe(name: str, sources: Path | None = None) -> list[tuple[str, Make, int | None, float]]:
    """The kinds of folder ``name``: ``(subfolder, make, images, jpeg_share)``; ``images`` None takes all there are;
    ``jpeg_share``: the share saved as JPEG (quality 75-95), photographs' only, the rest PNG. ``sources``: the
    cache of the emoji folders' npm packages (``OUT_ROOT/.sources``)."""
    if name.startswith("emoji-"):
        kinds, n = emoji_recipe(name, sources)
        return [(k, m, n, 0.0) for k, m in kinds]
    if name.startswith("glyphs-"):
        letters = "abcdefghijklmnopqrstuvwxyz" if name == "glyphs-26" else "abcdefghij"
        return [(f"letter-{c}", letter_kind(c), 250 if name == "glyphs-26" else 60, 0.0) for c in letters]
    fashion_all = [(FASHION[c], fashion_kind(c)) for c in range(10)]
    digits_all = [(f"digit-{d}", digit_kind(d)) for d in range(10)]
    photos_all = [(k, picture_kind(k)) for k in PICTURES] + [("face", face_kind)]
    photographic = set(PICTURES) | {"face"}
    turned = [(f"rot90-{FASHION[c]}", fashion_kind(c, 1)) for c in (1, 3, 7, 9)]
    pick = lambda kinds, names: [(k, m) for k, m in kinds if k in names]
    kinds, n = {
        "fmnist-3": (pick(fashion_all, ("trouser", "bag", "sneaker")), 300),
        "fmnist-5": (pick(fashion_all, ("t-shirt-top", "pullover", "dress", "sandal", "ankle-boot")), 400),
        "digits-10": (digits_all, None),
        "photos-5": (pick(photos_all, ("cat", "coffee", "rocket", "flower", "retina")), 60),
        "textures-6": ([(k, picture_kind(k, (0.08, 0.25), (32, 96)))
                        for k in ("brick", "grass", "gravel", "moon", "tissue", "deep-field")], 80),
        "photos-26": (photos_all, 40),
        "fmnist-10-small": (fashion_all, 50),
        "mixed-20": (fashion_all + digits_all, 100),
        "mixed-50": (fashion_all + turned + digits_all + photos_all, 60),
    }[name]
    return [(k, m, n, 0.6 if k in photographic else 0.0) for k, m in kinds]


# ---------------------------------------------------------------------------------------------------- folders
def list_images(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """The folder's images as relative paths in ``sorted(Path)`` order (the package's folder order), their labels
    ``int64 (N,)`` (index of the subfolder) and the sorted subfolder names."""
    folder = Path(folder)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.suffix in IMAGE_SUFFIXES and p.is_file())
    classes = sorted({p.parts[0] for p in files})
    index = {c: i for i, c in enumerate(classes)}
    return files, np.array([index[p.parts[0]] for p in files], dtype=np.int64), classes


def _save(im: Image.Image, stem: Path, rng: np.random.Generator, jpeg_share: float) -> None:
    if rng.random() < jpeg_share:
        im.save(stem.with_suffix(".jpg"), quality=int(rng.integers(75, 96)))
    else:
        im.save(stem.with_suffix(".png"))


def build(name: str, root: Path, seed: int = 0) -> Path:
    """Write folder ``root/name`` (one subfolder per kind) unless it is there, complete, for this seed; returns it.
    Each kind draws from its own generator, seeded by (seed, folder, kind), so the folder is deterministic."""
    if name not in FOLDERS:
        raise KeyError(f"unknown folder {name!r}: one of {', '.join(FOLDERS)}")
    out = Path(root) / name
    marker = out / MARKER
    if marker.is_file():
        if json.loads(marker.read_text()).get("seed") == seed:
            return out
        shutil.rmtree(out)                                         # ours (it has the marker), for another seed
    elif out.exists():
        raise FileExistsError(f"{out} exists but has no {MARKER} marker: not written by this script, left alone")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out.parent))
    try:
        counts = {}
        for kind, make, n, jpeg_share in recipe(name, Path(root) / SOURCES):
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(kind.encode())])
            (tmp / kind).mkdir()
            ims = make(rng, n)
            for i, im in enumerate(ims):
                _save(im, tmp / kind / f"{i:04d}", rng, jpeg_share)
            counts[kind] = len(ims)
        (tmp / MARKER).write_text(json.dumps({"name": name, "seed": seed, "images": sum(counts.values()),
                                              "classes": counts, **provenance(name)}, indent=1))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------------- the peer
_PEER_SCRIPT = r"""
import json, os, sys
import numpy as np
from clustimage import Clustimage
a = json.load(open(sys.argv[1]))
cl = Clustimage(method=a["method"], embedding=None, params_pca={"n_components": 0.95}, dirpath=a["tmp"],
                tempdir=a["tmp"], use_thumbnail_cache=False, ncores=a["ncores"], verbose="warning")
res = cl.fit_transform(a["files"], cluster="agglomerative", evaluate="silhouette", metric="euclidean",
                       linkage="ward", min_clust=a["min_clust"], max_clust=a["max_clust"] + 1)
kept = {os.path.abspath(p): int(l) for p, l in zip(res["pathnames"], res["labels"])}
json.dump([kept.get(os.path.abspath(p), -1) for p in a["files"]], open(a["out"], "w"))
"""


def ensure_peer_env(venv: Path = PEER_VENV) -> Path:
    """Make the peer's virtual environment (``clustimage`` and its dependencies) if it cannot import clustimage yet;
    returns its python. Idempotent."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import clustimage"], capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    (venv / ".gitignore").write_text("*\n")                        # keeps the repository's status clean
    subprocess.run([python, "-m", "pip", "install", "-q", PEER_REQUIREMENT], check=True)
    return python


def peer_pipeline(folder: Path, method: str = "hog", min_clust: int = 2, max_clust: int = 60,
                  venv: Path = PEER_VENV, ncores: int = 2) -> dict:
    """clustimage on the folder's images: grey 128x128 ``method`` features ("hog", "pca" on pixels, "pca-hog"),
    Ward agglomerative clustering, the number of clusters in ``min_clust..max_clust`` (inclusive) with the best
    silhouette. Returns ``labels`` ``int64 (N,)`` (-1 for an image it could not read), aligned with ``files``
    (``list_images`` order, relative paths), ``k`` (clusters found) and ``seconds`` (the subprocess, import
    included)."""
    folder = Path(folder).resolve()
    python = ensure_peer_env(venv)
    files = list_images(folder)[0]
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        args = {"files": [str(folder / f) for f in files], "method": method, "min_clust": min_clust,
                "max_clust": min(max_clust, len(files) - 1), "ncores": ncores, "tmp": tmp,
                "out": str(Path(tmp) / "labels.json")}
        (Path(tmp) / "args.json").write_text(json.dumps(args))
        start = time.perf_counter()
        run = subprocess.run([python, "-c", _PEER_SCRIPT, str(Path(tmp) / "args.json")], capture_output=True,
                             text=True, env={**os.environ, "MPLBACKEND": "Agg"})
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            raise RuntimeError(f"clustimage failed on {folder}:\n{run.stderr[-3000:]}")
        labels = np.array(json.loads((Path(tmp) / "labels.json").read_text()), dtype=np.int64)
    return {"labels": labels, "files": files, "k": len(set(labels[labels >= 0].tolist())), "seconds": seconds,
            "method": method}


def train_defaults(folder: Path, out: Path, seed: int, options: list[str] = ()) -> float:
    """``deepcluster train --data folder`` with the defaults (and ``options``), ``--seed seed``, into ``out`` (resumed
    if it is there; a finished run is read, not trained again). Returns the command's seconds from the run's
    ``timing.json``."""
    if not (out / "timing.json").is_file():
        subprocess.run([sys.executable, "-m", "deepcluster", "train", "--data", str(folder), "--out", str(out),
                        "--seed", str(seed), "--no-report", "--eval-seeds", "1", "--resume", *options], check=True,
                       stdout=subprocess.DEVNULL)
    return json.loads((out / "timing.json").read_text())["seconds"]


# ---------------------------------------------------------------------------------------------------- script
def describe(folder: Path) -> dict:
    """Counts and formats of a built folder: images, classes, pixel sizes (min-max of the longer side), modes."""
    files, _, classes = list_images(folder)
    sides, modes = [], set()
    for f in files:
        with Image.open(folder / f) as im:
            sides.append(max(im.size))
            modes.add(f"{im.mode}/{f.suffix[1:]}")
    return {"images": len(files), "classes": len(classes), "px": f"{min(sides)}-{max(sides)}",
            "modes": ",".join(sorted(modes))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_root", type=Path)
    ap.add_argument("names", nargs="*", help=f"folders to build (default: all): {', '.join(FOLDERS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer", action="store_true", help="also run clustimage on each folder: k, NMI, time")
    ap.add_argument("--peer-method", default="hog", choices=("hog", "pca", "pca-hog"))
    a = ap.parse_args()
    print(f"{'name':<16} {'images':>6} {'classes':>7} {'px':>7}  {'build_s':>7}  modes")
    for name in a.names or list(FOLDERS):
        start = time.perf_counter()
        folder = build(name, a.out_root, a.seed)
        d = describe(folder)
        print(f"{name:<16} {d['images']:>6} {d['classes']:>7} {d['px']:>7}  {time.perf_counter() - start:>7.1f}  "
              f"{d['modes']}", flush=True)
        if a.peer:
            from sklearn.metrics import normalized_mutual_info_score

            r = peer_pipeline(folder, a.peer_method)
            truth = list_images(folder)[1]
            print(f"  clustimage {r['method']}: k={r['k']} (true {d['classes']}), "
                  f"NMI={normalized_mutual_info_score(truth, r['labels']):.3f}, {r['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
