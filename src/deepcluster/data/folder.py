"""A folder of image files: scanned once (headers read, broken files set aside), decoded per item to a square."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..settings import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _looks_whole(path: Path) -> bool:
    """JPEG and PNG files end with a marker (EOI ``FFD9``, the ``IEND`` chunk); a file cut short lacks it. PIL's
    ``verify`` reads only headers, so this cheap look at the last bytes is what catches truncated files."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return True
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        tail = f.read()  # some writers append a few bytes after the marker, so look at the last kilobyte
    return (b"\xff\xd9" if suffix in (".jpg", ".jpeg") else b"IEND") in tail


def to_rgb_array(im) -> np.ndarray:
    """Any PIL image -> ``uint8 (H, W, 3)``: 16-bit and 32-bit grey scaled down to 8 bits (not clipped),
    float images taken as [0, 1] when they fit in it, transparency composited over white, CMYK and palettes
    converted by PIL."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and a.max() <= 1.0 else 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def labels_from_paths(paths) -> tuple[tuple, Optional[np.ndarray]]:
    """``(classes, targets)`` from relative paths: the first folder of each names its class when every image sits
    in one, else ``((), None)``."""
    parts = [Path(p).parts for p in paths]
    if not parts or not all(len(x) >= 2 for x in parts):
        return (), None
    classes = tuple(sorted({x[0] for x in parts}))
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.array([lookup[x[0]] for x in parts], dtype=np.int64)


def square(im, s: int):
    """A PIL image resized (shorter side ``s``, bilinear) and centre-cropped to ``uint8 (C, s, s)``."""
    from PIL import Image

    w, h = im.size
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    # only the centre square is resampled: the source box that maps onto it (the same pixels as resizing the
    # whole image and cropping, a quarter less work for 4:3 photos)
    sx, sy = w / nw, h / nh
    im = im.resize((s, s), Image.BILINEAR, box=(left * sx, top * sy, (left + s) * sx, (top + s) * sy))
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def read_rgb(path, draft: Optional[int] = None):
    """The image file ``path`` as an RGB PIL image (:func:`to_rgb_array`). With ``draft``, a JPEG is decoded at the
    smallest reduced scale that keeps both sides at least ``draft`` px (much faster for large photos)."""
    from PIL import Image

    with Image.open(path) as im:
        if draft:
            im.draft(None, (draft, draft))
        return Image.fromarray(to_rgb_array(im))


class ImageFolder(Dataset):
    """Every image file under ``root`` (recursively), decoded with PIL, resized (shorter side) and centre-cropped
    to a ``load_size`` square, as RGB ``uint8`` (see :func:`to_rgb_array` for other modes). Subfolder names of
    ``root`` become ``targets`` when every image sits in one; they are only used for evaluation.

    Unreadable files (empty, truncated, not images) are skipped with one warning that counts them and names a
    few; with ``strict`` they are an error instead."""

    def __init__(self, root: str | Path, load_size: int, strict: bool = False):
        from PIL import Image

        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"data folder {self.root} does not exist: give an existing folder or "
                              f"'fashion-mnist' to --data")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        good, bad, sizes = [], [], []
        for p in files:  # a header read per file: cheap, and it keeps broken files out of the training loop
            try:
                with Image.open(p) as im:
                    size = im.size
                    im.verify()
                whole = _looks_whole(p)
            except Exception:
                whole = False
            (good if whole else bad).append(p)
            if whole:
                sizes.append(size)
        if bad:
            names = ", ".join(str(p.relative_to(self.root)) for p in bad[:3])
            if strict:
                raise ConfigError(f"{len(bad)} unreadable image file(s) in {self.root} (e.g. {names}): remove "
                                  f"them, or drop --strict to skip them")
            warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {self.root} (e.g. {names})")
        if not good:
            what = "no readable image" if files else "no image files (" + ", ".join(IMAGE_EXTENSIONS[:4]) + ", ...)"
            raise ConfigError(f"data folder {self.root} holds {what}: point --data at a folder of images")
        self.files, self.sizes = good, sizes  # sizes: (width, height) of each file, from its header
        self.load_size = load_size
        self.channels = 3
        self.mean, self.std, self.name = IMAGENET_MEAN, IMAGENET_STD, str(self.root)
        self.classes, self.targets = labels_from_paths([p.relative_to(self.root) for p in good])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            # a JPEG of twice the load size or more is decoded at a reduced scale that keeps it at least that
            # large (a 4000 x 3000 photo for 256 px: 5x faster, within 2 grey levels of decoding it whole)
            im = read_rgb(self.files[i], draft=self.load_size)
        except Exception as e:
            raise ConfigError(f"cannot read {self.files[i]} ({type(e).__name__}: {e}); it was readable when the "
                              f"folder was scanned: remove or restore it, then --resume") from None
        return square(im, self.load_size), i

    def take(self, indices) -> "ImageFolder":
        """The same folder seen through the images ``indices`` (in that order): files, sizes and labels."""
        idx = list(indices)
        out = object.__new__(ImageFolder)
        out.__dict__.update(self.__dict__)
        out.files, out.sizes = [self.files[i] for i in idx], [self.sizes[i] for i in idx]
        out.targets = None if self.targets is None else self.targets[idx]
        return out
