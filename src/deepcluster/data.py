"""Datasets that yield ``(image, index)``, and the loader that batches them.

Images come out as ``uint8`` tensors ``(C, S, S)`` at a fixed *load size* S; the views the network sees (the
centre view for feature extraction, the augmented view for training) are made from whole batches on the device
by :mod:`deepcluster.views`. Labels, when a dataset has them, are kept in ``targets`` for evaluation only:
training never reads them.
"""
from __future__ import annotations

import gzip
import os
import struct
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .config import Config, ConfigError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorImages(Dataset):
    """Images held in memory as one ``uint8`` tensor ``(N, C, S, S)``; batches are fetched with one index op."""

    def __init__(self, images: torch.Tensor, targets: Optional[np.ndarray] = None, classes: Sequence[str] = (),
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), name: str = "tensor"):
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[2] == images.shape[3]
        self.images, self.targets, self.classes = images, targets, tuple(classes)
        self.mean, self.std, self.name = tuple(mean), tuple(std), name

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def load_size(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i

    def __getitems__(self, indices: list[int]):
        # DataLoader calls this with a whole batch of indices: one gather instead of N item fetches.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], idx

    def subset(self, n: int) -> "TensorImages":
        t = None if self.targets is None else self.targets[:n]
        return TensorImages(self.images[:n], t, self.classes, self.mean, self.std, self.name)


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
        rel = [p.relative_to(self.root).parts for p in good]
        if all(len(parts) >= 2 for parts in rel):
            self.classes = tuple(sorted({parts[0] for parts in rel}))
            lookup = {c: i for i, c in enumerate(self.classes)}
            self.targets: Optional[np.ndarray] = np.array([lookup[parts[0]] for parts in rel], dtype=np.int64)
        else:
            self.classes, self.targets = (), None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                im = Image.fromarray(to_rgb_array(im))
        except Exception as e:
            raise ConfigError(f"cannot read {self.files[i]} ({type(e).__name__}: {e}); it was readable when the "
                              f"folder was scanned: remove or restore it, then --resume") from None
        s = self.load_size
        w, h = im.size
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - s) // 2, (nh - s) // 2
        arr = np.asarray(im.crop((left, top, left + s, top + s)), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1), i

    def subset(self, n: int) -> "ImageFolder":
        out = object.__new__(ImageFolder)
        out.__dict__.update(self.__dict__)
        out.files, out.sizes = self.files[:n], self.sizes[:n]
        out.targets = None if self.targets is None else self.targets[:n]
        return out


def in_memory(dataset, budget_gb: float, workers: Optional[int] = None,
              desc: Optional[str] = "decoding images into memory"):
    """``dataset`` decoded once into a :class:`TensorImages` (same images, bytes for bytes, same labels and name)
    when it is an image folder whose decoded images take at most ``budget_gb`` GiB and under half the free
    memory; otherwise ``dataset`` itself. Every later pass then reads memory instead of decoding each file
    again: a small folder's epochs no longer pay JPEG decoding twice (extraction and training)."""
    if not isinstance(dataset, ImageFolder):
        return dataset
    n, s = len(dataset), dataset.load_size
    need = n * dataset.channels * s * s
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > budget_gb * 2 ** 30 or need > free / 2:
        return dataset
    from tqdm import tqdm

    images = torch.empty((n, dataset.channels, s, s), dtype=torch.uint8)
    for batch, idx in tqdm(make_loader(dataset, range(n), 256, workers), desc=desc, leave=False, unit="batch",
                           disable=True if desc is None else None):  # None: quiet off a terminal
        images[idx] = batch
    return TensorImages(images, dataset.targets, dataset.classes, dataset.mean, dataset.std, dataset.name)


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzip) IDX file of unsigned bytes, the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def fashion_mnist(split: str = "train", root: Optional[str] = None) -> TensorImages:
    """Fashion-MNIST from its IDX files (Debian package ``dataset-fashion-mnist``): 60,000 train or 10,000 test
    28x28 grayscale images with their 10 class labels."""
    root = Path(root or os.environ.get("DEEPCLUSTER_FASHION_MNIST", FASHION_MNIST_ROOT))
    prefix = {"train": "train", "test": "t10k"}[split]
    paths = [root / f"{prefix}-{kind}-idx{n}-ubyte.gz" for kind, n in (("images", 3), ("labels", 1))]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"Fashion-MNIST file {p} not found: install it with 'apt-get install "
                              f"dataset-fashion-mnist' or point --data-root at the folder holding it")
    images = torch.from_numpy(read_idx(paths[0]).copy()).unsqueeze(1)
    labels = read_idx(paths[1]).astype(np.int64)
    return TensorImages(images, labels, FASHION_MNIST_CLASSES, mean=(0.2860,), std=(0.3530,),
                        name=f"fashion-mnist/{split}")


def default_image_size(cfg: Config) -> int:
    if cfg.image_size:
        return cfg.image_size
    if cfg.data == "fashion-mnist":
        return 28
    return 224 if cfg.arch in ("alexnet", "vgg16") else 32


def load_size_for(image_size: int) -> int:
    """Images are stored a little larger than the network input (the paper: 256 for 224) so that the centre
    view is a centre crop; tiny images (<= 64 px) are used as they are."""
    return image_size if image_size <= 64 else round(image_size * 256 / 224)


def open_training_images(cfg: Config):
    """The training images of ``cfg`` (its ``--subset`` taken), opened but not decoded: a folder is scanned (its
    files' headers read), the built-in dataset read. What the recipe profiles before the run's settings are known;
    :func:`load_datasets` takes it from there."""
    if cfg.data == "fashion-mnist":
        train = fashion_mnist("train", cfg.data_root)
    else:
        train = ImageFolder(cfg.data, load_size_for(default_image_size(cfg)), cfg.strict)
    if cfg.subset:
        train = train.subset(min(cfg.subset, len(train)))
    if len(train) < 2:
        raise ConfigError(f"{train.name} holds {len(train)} image(s): DeepCluster needs at least 2")
    return train


def load_datasets(cfg: Config, cache: bool = True, train=None):
    """Return ``(train, val)`` datasets for the config; ``val`` is None when no held-out split exists. ``train``,
    when given, is the result of :func:`open_training_images` (not scanned again). With ``cache``, image folders
    that fit in ``cfg.cache_gb`` are decoded into memory (:func:`in_memory`), the training set first."""
    size = default_image_size(cfg)
    train = open_training_images(cfg) if train is None else train
    if cfg.data == "fashion-mnist":
        val = fashion_mnist("test", cfg.data_root)
        if size != 28:
            raise ConfigError(f"fashion-mnist images are 28 px: drop --image-size {size} or set it to 28")
    else:
        train.load_size = load_size_for(size)
        val = ImageFolder(cfg.val_data, load_size_for(size), cfg.strict) if cfg.val_data else None
    if cache and cfg.cache_gb > 0:
        from . import distributed as dist

        desc = "decoding images into memory" if dist.is_main() else None
        train = in_memory(train, cfg.cache_gb, cfg.workers, desc)
        if val is not None:
            left = cfg.cache_gb - (train.images.numel() / 2 ** 30 if isinstance(train, TensorImages) else 0)
            val = in_memory(val, left, cfg.workers, desc)
    return train, val


def _collate(batch):
    # TensorImages.__getitems__ already returns a batch; per-item datasets fall back to torch's collate.
    return batch if isinstance(batch, tuple) else default_collate(batch)


def auto_workers(dataset) -> int:
    """Loader processes when none are asked for: none for images already in memory (a batch is one index op) or
    on a machine without a CUDA GPU (the network's threads use every core, and decoding a JPEG costs a few
    percent of a CPU training step); else, decoding being a GPU run's bottleneck, one per core of this process's
    share of the machine (torchrun's ``LOCAL_WORLD_SIZE`` processes share it), less one, at most 16 (each worker
    holds two batches in flight)."""
    if isinstance(dataset, TensorImages) or not torch.cuda.is_available():
        return 0
    cores = len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(16, cores - 1))


def make_loader(dataset, indices: Sequence[int], batch_size: int, workers: Optional[int] = 0,
                pin_memory: bool = False) -> DataLoader:
    """Batches of ``(images uint8 (B, C, S, S), indices (B,))`` in the order of ``indices``, loaded by
    ``workers`` processes (None: :func:`auto_workers`)."""
    workers = auto_workers(dataset) if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, sampler=list(indices), num_workers=workers,
                      collate_fn=_collate, pin_memory=pin_memory, persistent_workers=False)
