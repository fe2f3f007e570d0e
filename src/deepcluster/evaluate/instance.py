"""Instance retrieval, the protocol of the paper's Table 5, and a copy-detection benchmark for any folder.

Both rank a database of whole images by the cosine similarity of R-MAC descriptors (Tolias, Sicre and Jégou,
ICLR 2016: :mod:`.retrieval`) read from one conv layer at a given resolution (the longer side ``max_size``; the
paper: VGG-16 at 1024 px, 3 levels), with the regional vectors PCA-whitened on *another* image set.

- :func:`instance_retrieval`: Oxford5k / Paris6k (Philbin et al. 2007 / 2008) and their revisited versions
  (Radenović et al. 2018). :func:`read_ground_truth` reads the original text files (``NAME_query.txt`` with the
  query's image and box, ``NAME_good.txt`` / ``_ok.txt`` / ``_junk.txt``) or a revisited ``gnd_*.pkl``, loaded by
  an unpickler that builds plain data only. Queries are cropped to their box at the scale of the whole image;
  ``good`` and ``ok`` images are relevant, ``junk`` ones take no part in the ranking, and average precision is
  the trapezoid rule of the benchmark's ``compute_ap`` (precision 1 before the first item).
- :func:`copy_detection`: each query is a strong transformation of one database image (a crop, rotation, colour
  change, blur, rescaling and JPEG re-encoding, as in the Copydays benchmark of Douze et al. 2009); the other
  images are distractors. One relevant image per query: AP is 1 / its rank, with recall at 1, 5 and 10.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data import IMAGE_EXTENSIONS
from ..data.adapt import to_channels
from ..data.folder import read_rgb
from ..preprocess import l2_normalize
from ..settings import ConfigError
from ..views import normalize
from .retrieval import RegionWhitening, regional_max, rmac_regions

PROTOCOLS = ("easy", "medium", "hard")  # the revisited benchmarks' three; the original text files have one
MIN_SIDE = 16  # no image is read smaller than this (a tiny query box would vanish in the deep layers)


@dataclass(frozen=True)
class Query:
    image: str  # the image's name, without extension
    box: Optional[tuple[float, float, float, float]]  # x1, y1, x2, y2 in the image's pixels, or None: whole
    positives: frozenset
    junk: frozenset


@dataclass
class GroundTruth:
    queries: list
    database: Optional[list]  # image names; None: every image of the folder (queries included)
    source: str


# ---- ground truth

def read_ground_truth(path: str | Path, protocol: str = "medium") -> GroundTruth:
    """A folder of the original text files, or a revisited ``.pkl`` (``protocol``: easy, medium or hard)."""
    path = Path(path)
    if path.is_dir():
        return _read_text_ground_truth(path)
    if path.suffix == ".pkl" and path.is_file():
        return _read_revisited(path, protocol)
    raise ConfigError(f"--ground-truth {path}: give the folder of the benchmark's NAME_query.txt / _good.txt / "
                      f"_ok.txt / _junk.txt files, or a revisited gnd_*.pkl")


def _names(path: Path) -> frozenset:
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


def _read_text_ground_truth(folder: Path) -> GroundTruth:
    queries = []
    for qf in sorted(folder.glob("*_query.txt")):
        stem = qf.name[:-len("_query.txt")]
        parts = qf.read_text().split()
        try:
            image, box = parts[0], tuple(float(v) for v in parts[1:5])
            assert len(box) == 4 and box[0] < box[2] and box[1] < box[3]
        except (IndexError, ValueError, AssertionError):
            raise ConfigError(f"{qf}: a query file holds one line 'IMAGE x1 y1 x2 y2'") from None
        lists = {}
        for kind in ("good", "ok", "junk"):
            f = folder / f"{stem}_{kind}.txt"
            if not f.is_file():
                raise ConfigError(f"{f} is missing: each NAME_query.txt comes with NAME_good.txt, NAME_ok.txt and "
                                  f"NAME_junk.txt")
            lists[kind] = _names(f)
        image = image[len("oxc1_"):] if image.startswith("oxc1_") else image  # Oxford's query files add a prefix
        queries.append(Query(image, box, lists["good"] | lists["ok"], lists["junk"]))
    if not queries:
        raise ConfigError(f"{folder} holds no NAME_query.txt file: point --ground-truth at the benchmark's "
                          f"ground-truth folder")
    return GroundTruth(queries, None, str(folder))


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers only, plus numpy arrays (which a revisited file may hold): any
    other object in the file is refused, so a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
        if module == "numpy":
            return getattr(np, name)
        try:  # numpy 2 moved the module that numpy 1 wrote into its pickles
            import numpy._core.multiarray as multiarray
        except ImportError:  # pragma: no cover - numpy 1
            import numpy.core.multiarray as multiarray
        return getattr(multiarray, name)


def _read_revisited(path: Path, protocol: str) -> GroundTruth:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{protocol}' of the revisited benchmarks: choose {', '.join(PROTOCOLS)}")
    try:
        with open(path, "rb") as f:
            cfg = _PlainUnpickler(f).load()
        imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as e:
        raise ConfigError(f"{path} is not a revisited ground-truth file ({type(e).__name__}: {e}): give "
                          f"gnd_roxford5k.pkl or gnd_rparis6k.pkl as published") from None
    names = lambda idx: frozenset(imlist[int(i)] for i in np.atleast_1d(idx))
    queries = []
    for q, g in zip(qimlist, gnd):
        if "ok" in g:  # the classic files of the same layout: 'ok' is good + ok already
            pos, junk = names(g["ok"]), names(g["junk"])
        else:
            easy, hard, junk = names(g["easy"]), names(g["hard"]), names(g["junk"])
            pos, junk = {"easy": (easy, junk | hard), "medium": (easy | hard, junk),
                         "hard": (hard, junk | easy)}[protocol]
        queries.append(Query(q, tuple(float(v) for v in g["bbx"]), pos, junk))
    return GroundTruth(queries, imlist, f"{path} ({protocol})")


def average_precision(ranked: list, positives: frozenset, junk: frozenset) -> float:
    """The benchmark's AP of one ranked list of names: junk skipped, the area under precision-recall summed by
    the trapezoid rule from precision 1 at recall 0; positives missing from the list count as never found."""
    if not positives:
        return float("nan")
    ap, hits, seen, old_recall, old_precision = 0.0, 0, 0, 0.0, 1.0
    for name in ranked:
        if name in junk:
            continue
        seen += 1
        if name in positives:
            hits += 1
            recall, precision = hits / len(positives), hits / seen
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
        else:
            old_precision = hits / seen
    return ap


# ---- descriptors

class WholeImages(Dataset):
    """Images read whole (no centre crop), the longer side scaled to ``max_size`` (a query cropped to its box at
    the scale of its whole image), as the network takes them: its channels and normalisation, ``(C, H, W)``."""

    def __init__(self, sources: list, max_size: int, channels: int, mean, std, boxes: Optional[list] = None):
        self.sources, self.max_size, self.channels = sources, max_size, channels
        self.mean, self.std, self.boxes = mean, std, boxes

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int):
        from PIL import Image

        src = self.sources[i]
        im = read_rgb(src) if isinstance(src, (str, Path)) else src
        scale = self.max_size / max(im.size)
        box = self.boxes[i] if self.boxes is not None else None
        if box is not None:
            im = im.crop(tuple(int(round(v)) for v in box))
        w, h = (max(MIN_SIDE, round(v * scale)) for v in im.size)
        im = im.convert("RGB").resize((w, h), Image.BILINEAR)
        x = to_channels(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1), self.channels)
        return normalize(x, self.mean, self.std), i


def regional_vectors(model, layer: int, images: WholeImages, device, workers: int = 0,
                     desc: Optional[str] = None) -> list[np.ndarray]:
    """Each image's R-MAC regional max vectors ``(R, C)`` (R depends on its shape) from conv ``layer``."""
    model.eval()
    loader = DataLoader(images, batch_size=None, num_workers=workers)
    out: list = [None] * len(images)
    with torch.no_grad():
        for x, i in tqdm(loader, desc=desc, leave=False, disable=True if desc is None else None, unit="image"):
            fmap = model.conv_outputs(x.reshape(1, *x.shape[-3:]).to(device), upto=layer)[-1]
            out[i] = regional_max(fmap, rmac_regions(fmap.shape[2], fmap.shape[3])).float()[0].cpu().numpy()
    return out


def descriptors(regional: list[np.ndarray], whitening: RegionWhitening) -> np.ndarray:
    """Regional vectors of each image -> its R-MAC descriptor: whitened regions summed, L2-normalised."""
    return l2_normalize(np.stack([whitening.transform(r).sum(0) for r in regional]))


class Reader:
    """What both protocols share: the network, its layer, the resolution and the images' format."""

    def __init__(self, model, layer: int, max_size: int, images, device, workers: int = 0, progress: bool = True):
        """``images``: what the network reads (:class:`~deepcluster.data.adapt.Format`, or a dataset)."""
        self.model, self.layer, self.max_size, self.device, self.workers = model, layer, max_size, device, workers
        self.channels, self.mean, self.std, self.progress = images.channels, images.mean, images.std, progress

    def regional(self, sources: list, boxes: Optional[list] = None, desc: str = "") -> list[np.ndarray]:
        images = WholeImages(sources, self.max_size, self.channels, self.mean, self.std, boxes)
        return regional_vectors(self.model, self.layer, images, self.device, self.workers,
                                desc if self.progress else None)

    def whitening(self, sources: list, desc: str = "whitening images") -> RegionWhitening:
        regs = self.regional(sources, desc=desc)
        dims = regs[0].shape[1]
        return RegionWhitening(min(512, dims)).fit(np.concatenate(regs))


def image_files(folder: str | Path) -> list:
    """Every image file under ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of images")
    return [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]


def sample_files(folder: str | Path, n: int, seed: int = 0) -> list:
    files = image_files(folder)
    if not files:
        raise ConfigError(f"{folder} holds no image files")
    pick = np.random.default_rng(seed).choice(len(files), min(n, len(files)), replace=False)
    return [files[i] for i in sorted(pick)]


# ---- the protocols

def instance_retrieval(reader: Reader, images: str | Path, gt: GroundTruth, whiten_from: list) -> dict:
    """mAP of the ground truth's queries against its database in ``images`` (R-MAC, whitening fitted on
    ``whiten_from``: images of another set, e.g. Paris for Oxford)."""
    files = {p.stem: p for p in image_files(images)}  # the benchmarks name images by file name, in any subfolder
    names = gt.database if gt.database is not None else list(files)
    missing = [n for n in names + [q.image for q in gt.queries] if n not in files]
    if missing:
        raise ConfigError(f"{len(missing)} image(s) of the ground truth are not in {images} (e.g. {missing[0]}): "
                          f"give the benchmark's image folder to --data")
    whitening = reader.whitening(whiten_from)
    db = descriptors(reader.regional([files[n] for n in names], desc="database"), whitening)
    q = descriptors(reader.regional([files[x.image] for x in gt.queries], [x.box for x in gt.queries], "queries"),
                    whitening)
    aps = []
    for query, scores in zip(gt.queries, q @ db.T):
        ranked = [names[i] for i in np.argsort(-scores, kind="stable")]
        aps.append(average_precision(ranked, query.positives, query.junk))
    aps = np.array(aps)
    return {"ground_truth": gt.source, "queries": int(np.isfinite(aps).sum()), "images": len(names),
            "map": float(np.nanmean(aps)), "max_size": reader.max_size, "whitening_images": len(whiten_from)}


def strong_copy(im, rng: np.random.Generator):
    """A Copydays-like "strong" copy of a PIL image: a crop keeping 50-90 % of the area, a rotation of up to 10
    degrees, colour, contrast and brightness changed by up to 40 %, a blur, a rescaling to 50-100 % and a JPEG
    re-encoding at quality 30-70."""
    import io

    from PIL import Image, ImageEnhance, ImageFilter

    im = im.convert("RGB")
    w, h = im.size
    area, aspect = rng.uniform(0.5, 0.9), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, max(8, round(w * np.sqrt(area * aspect)))), min(h, max(8, round(h * np.sqrt(area / aspect))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch)).rotate(float(rng.uniform(-10, 10)), Image.BILINEAR)
    for enhance in (ImageEnhance.Color, ImageEnhance.Contrast, ImageEnhance.Brightness):
        im = enhance(im).enhance(float(rng.uniform(0.6, 1.4)))
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    s = rng.uniform(0.5, 1.0)
    im = im.resize((max(8, round(im.width * s)), max(8, round(im.height * s))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(30, 71)))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def copy_detection(reader: Reader, database: list, whiten_from: list, queries: int = 500, seed: int = 0) -> dict:
    """``queries`` database images, drawn at random, each queried by a strong copy of itself (:func:`strong_copy`)
    against the whole ``database`` (PIL images or files); mAP and recall at 1, 5 and 10."""
    if len(database) < 2:
        raise ConfigError("copy detection needs a database of at least 2 images")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(database), min(queries, len(database)), replace=False))
    originals = [read_rgb(database[i]) if isinstance(database[i], (str, Path)) else database[i] for i in picked]
    copies = [strong_copy(im, np.random.default_rng([seed, int(i)])) for im, i in zip(originals, picked)]
    whitening = reader.whitening(whiten_from)
    db = descriptors(reader.regional(database, desc="database"), whitening)
    q = descriptors(reader.regional(copies, desc="copies"), whitening)
    scores = q @ db.T
    ranks = (scores > scores[np.arange(len(picked)), picked][:, None]).sum(1) + 1  # ties count in the copy's favour
    return {"queries": len(picked), "images": len(database), "map": float(np.mean(1 / ranks)),
            **{f"recall@{k}": float(np.mean(ranks <= k)) for k in (1, 5, 10)}, "max_size": reader.max_size,
            "whitening_images": len(whiten_from)}
