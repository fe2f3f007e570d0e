"""A folder of images prepared once for fast reading: ``deepcluster prepare SRC DEST``.

Every readable image of SRC is decoded once, squared at its load size (shorter side resized, centre crop: what
:class:`~deepcluster.data.folder.ImageFolder` delivers) and re-encoded as a JPEG of that square (quality 90, no
chroma subsampling: 1.5 grey levels from the decoded square on average, on photos), packed in shard
files of :data:`SHARD` images. Reading an item is then one slice of a memory-mapped shard and the decoding of a
small JPEG: 3.5-5x the rate of decoding and resizing a 500 x 375 photo (docs/scaling.md), random access by index
as the training's sampler needs (a sequential tar stream would not do), and a tenth of the disk of raw pixels.

Layout of DEST: ``shard-00000.bin`` (the JPEGs one after another) and ``shard-00000.idx.npy`` (their byte lengths),
..., then ``prepared.json`` (source folder, load size, quality, the images' relative paths and original sizes).
``prepared.json`` is written last, atomically: a DEST without it is half-written and never read as data. A shard
counts once its index file exists and its bytes add up; an interrupted ``prepare`` resumes at the first shard that
does not, reading ``prepare.partial.json`` (the file list and settings it started with).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..rundir import atomic_write_text
from ..settings import ConfigError
from .folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolder, labels_from_paths

MANIFEST, PARTIAL = "prepared.json", "prepare.partial.json"
SHARD = 4096  # images per shard: ~100 MB of 256-px JPEGs, a unit of resumption small enough to lose
VERSION = 1


def is_prepared(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def check_not_partial(path) -> None:
    """A ConfigError when ``path`` is a folder that ``prepare`` started and did not finish."""
    if (Path(path) / PARTIAL).is_file() and not is_prepared(path):
        raise ConfigError(f"{path} is a prepared folder not finished: run 'deepcluster prepare' with the same "
                          f"source and {path} again to finish it (it resumes)")


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}"


class PreparedImages(Dataset):
    """The images of a prepared folder (see the module's text), as ``uint8 (3, S, S)`` squares with their index.
    ``files`` are the source files (so exports link to them), ``root`` the source folder, ``sizes`` the original
    ``(width, height)``; ``classes`` / ``targets`` come from the source's subfolders as for an image folder.

    ``load_size``: the side delivered; the prepared side by default. A smaller one is resized on the fly (the
    same centre square, antialiased); a larger one is refused (prepare again at that size). Batches can also come
    undecoded (:meth:`reading_jpegs`) and be decoded on a GPU (:meth:`decode`), as the training's passes do on
    CUDA (``decoding``, :func:`~deepcluster.data.loader.decodes_on_device`)."""

    def __init__(self, path: str | Path, load_size: Optional[int] = None):
        self.path = Path(path)
        check_not_partial(self.path)
        try:
            meta = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {self.path / MANIFEST} ({e}): prepare the folder again") from None
        if meta.get("version") != VERSION:
            raise ConfigError(f"{self.path} was prepared by another version of deepcluster (format "
                              f"{meta.get('version')}, this one reads {VERSION}): prepare it again")
        self.prepared_size, self.quality = int(meta["load_size"]), int(meta["quality"])
        self.root = Path(meta["source"])
        rel = meta["files"]
        self.files = [self.root / r for r in rel]
        self.sizes = [tuple(s) for s in meta["sizes"]]
        self.classes, self.targets = labels_from_paths(rel)
        lengths = [np.load(self.path / f"{_shard_name(s)}.idx.npy") for s in range(meta["shards"])]
        self._shard = np.concatenate([np.full(len(n), s, np.int32) for s, n in enumerate(lengths)])
        self._end = np.concatenate([np.cumsum(n, dtype=np.int64) for n in lengths])
        self._length = np.concatenate(lengths).astype(np.int64)
        if len(self._end) != len(self.files):
            raise ConfigError(f"{self.path} lists {len(self.files)} images but its shards hold {len(self._end)}: "
                              f"prepare it again")
        self.channels, self.mean, self.std, self.name = 3, IMAGENET_MEAN, IMAGENET_STD, str(self.path)
        self.load_size = load_size or self.prepared_size
        self.decoding = "auto"  # auto, cpu or device (Config.decode): read by loader.decodes_on_device
        self._maps: dict = {}

    @property
    def load_size(self) -> int:
        return self._load_size

    @load_size.setter
    def load_size(self, s: int) -> None:
        if s > self.prepared_size:
            raise ConfigError(f"{self.path} was prepared at {self.prepared_size} px and this run loads {s} px: "
                              f"prepare the source again with --image-size for this network")
        self._load_size = s

    def __len__(self) -> int:
        return len(self._end)

    def __getstate__(self):  # loader workers map the shards themselves
        return {**self.__dict__, "_maps": {}}

    def encoded(self, i: int) -> torch.Tensor:
        """Item ``i``'s JPEG bytes, as a ``uint8`` tensor viewing the memory-mapped shard."""
        s = int(self._shard[i])
        if s not in self._maps:
            # copy-on-write: a writable view for torch, and nothing is ever written back to the shard
            self._maps[s] = np.memmap(self.path / f"{_shard_name(s)}.bin", dtype=np.uint8, mode="c")
        end = int(self._end[i])
        return torch.from_numpy(np.asarray(self._maps[s][end - int(self._length[i]):end]))

    def __getitem__(self, i: int):
        return self.decode(self.jpegs([i]))[0], i

    def __getitems__(self, indices: list[int]):
        # DataLoader calls this with a whole batch of indices: one stacked batch, no per-item collation
        return self.decode(self.jpegs(indices)), torch.as_tensor(indices, dtype=torch.long)

    def jpegs(self, indices: list[int]) -> "JpegBatch":
        """The JPEG bytes of items ``indices``, one after another in one tensor: what a loader process hands over
        when the images are decoded on the device (one shared buffer, not one per image)."""
        parts = [self.encoded(i) for i in indices]
        return JpegBatch(torch.cat(parts), torch.tensor([len(p) for p in parts], dtype=torch.long))

    def decode(self, batch: "JpegBatch", device: torch.device | str = "cpu") -> torch.Tensor:
        """``uint8 (B, 3, load_size, load_size)`` on ``device`` from a :class:`JpegBatch`: decoded there in one call
        (nvJPEG on a CUDA device, libjpeg-turbo on the CPU) and resized there when ``load_size`` is smaller than the
        prepared side."""
        from torchvision.io import ImageReadMode, decode_jpeg

        parts = list(torch.split(batch.data, batch.lengths.tolist()))
        images = torch.stack(decode_jpeg(parts, mode=ImageReadMode.RGB, device=device))
        return self.resized(images)

    def resized(self, images: torch.Tensor) -> torch.Tensor:
        """Squares ``(B, 3, P, P)`` at the prepared size -> squares at ``load_size``, antialiased as PIL resizes,
        on the images' device."""
        if images.shape[-1] == self.load_size:
            return images
        import torch.nn.functional as F

        x = F.interpolate(images.float(), size=(self.load_size,) * 2, mode="bilinear", antialias=True,
                          align_corners=False)
        return x.round_().clamp_(0, 255).to(torch.uint8)

    def reading_jpegs(self) -> "_JpegReader":
        """This folder as a dataset whose batches are :class:`JpegBatch` es, not decoded (see :meth:`decode`)."""
        return _JpegReader(self)

    def take(self, indices) -> "PreparedImages":
        """The same prepared folder seen through the images ``indices`` (in that order)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        out = object.__new__(PreparedImages)
        out.__dict__.update(self.__getstate__())
        out.files, out.sizes = [self.files[i] for i in idx], [self.sizes[i] for i in idx]
        out.targets = None if self.targets is None else self.targets[idx]
        out._shard, out._end, out._length = self._shard[idx], self._end[idx], self._length[idx]
        return out


class JpegBatch(NamedTuple):
    """A batch of JPEG files as one byte tensor: ``data uint8 (total bytes,)``, ``lengths int64 (B,)``."""

    data: torch.Tensor
    lengths: torch.Tensor


class _JpegReader(Dataset):
    """A prepared folder whose batches come undecoded: ``(JpegBatch, indices (B,))``."""

    def __init__(self, images: PreparedImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]):
        return self.images.jpegs(indices), torch.as_tensor(indices, dtype=torch.long)


class _Encoder(Dataset):
    """The source folder's items as JPEG bytes of their load-size square (encoded in the loader's workers)."""

    def __init__(self, folder: ImageFolder, quality: int):
        self.folder, self.quality = folder, quality

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        import io

        from PIL import Image

        out = io.BytesIO()  # no chroma subsampling (4:4:4): colour edges survive (at 4:2:0 stripes blur to grey)
        Image.fromarray(self.folder[i][0].permute(1, 2, 0).numpy()).save(out, "JPEG", quality=self.quality,
                                                                          subsampling=0)
        return out.getvalue()


def _as_list(batch):
    return batch


def _shard_done(dest: Path, s: int, count: int) -> bool:
    idx, data = dest / f"{_shard_name(s)}.idx.npy", dest / f"{_shard_name(s)}.bin"
    if not (idx.is_file() and data.is_file()):
        return False
    try:
        lengths = np.load(idx)
    except (OSError, ValueError):
        return False
    return len(lengths) == count and int(lengths.sum()) == data.stat().st_size


def prepare(src: str | Path, dest: str | Path, image_size: int | Callable[[ImageFolder], int] = 224,
            quality: int = 90, workers: Optional[int] = None, strict: bool = False, progress: bool = True) -> dict:
    """Prepare the image folder ``src`` into ``dest`` (see the module's text) for networks of ``image_size`` px
    (the load size is :func:`~deepcluster.data.load_size_for` of it: 256 for 224); ``image_size`` may be a
    function of the scanned folder (the command line's auto: the recipe's network for it). Resumes a ``dest`` it
    left half-written; a finished ``dest`` with the same source and settings is left as it is. Returns a summary:
    ``images``, ``shards``, ``bytes``, ``done_before`` (shards found complete), ``load_size``, ``dest``."""
    from tqdm import tqdm

    from . import load_size_for

    src, dest = Path(src), Path(dest)
    if not 1 <= quality <= 100:
        raise ConfigError(f"--quality {quality}: give a JPEG quality from 1 to 100 (90 by default)")
    if is_prepared(src) or (src / PARTIAL).is_file():
        raise ConfigError(f"{src} is itself a prepared folder: give the folder of the original images")
    if dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents:
        raise ConfigError(f"{dest} lies inside the source folder {src}: choose a folder outside it (the source is "
                          f"never written to)")
    settings = {"version": VERSION, "source": str(src.resolve()), "quality": quality}
    if not callable(image_size):  # auto: whatever size the folder was prepared at, its own choice
        settings["load_size"] = load_size_for(image_size)
    if is_prepared(dest):
        return _finished(dest, settings)
    if dest.exists() and not (dest / PARTIAL).is_file() and any(dest.iterdir()):
        raise ConfigError(f"{dest} exists and is not empty: choose a new folder (nothing in it is replaced)")
    folder = ImageFolder(src, settings.get("load_size", 256), strict)
    load_size = folder.load_size = load_size_for(image_size(folder)) if callable(image_size) else folder.load_size
    settings["load_size"] = load_size
    rel = [str(f.relative_to(folder.root)) for f in folder.files]
    plan = {**settings, "files": rel, "sizes": [list(s) for s in folder.sizes]}
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / PARTIAL).is_file():
        started = json.loads((dest / PARTIAL).read_text())
        if started != plan:
            raise ConfigError(f"{dest} was started from other images or settings (the source changed since?): "
                              f"remove {dest} and prepare again, or give the settings it was started with")
    else:
        _write_json(dest / PARTIAL, plan)
    n = len(rel)
    shards = (n + SHARD - 1) // SHARD
    count = lambda s: min(SHARD, n - s * SHARD)  # images in shard s
    todo = [s for s in range(shards) if not _shard_done(dest, s, count(s))]
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    enc = _Encoder(folder, quality)
    bar = tqdm(total=n, initial=n - sum(count(s) for s in todo), unit="image", desc="preparing",
               disable=True if not progress else None)
    for s in todo:
        loader = DataLoader(enc, batch_size=64, sampler=list(range(s * SHARD, min(n, (s + 1) * SHARD))),
                            num_workers=workers, collate_fn=_as_list)
        _write_shard(dest / _shard_name(s), loader, bar)
    bar.close()
    _write_json(dest / MANIFEST, {**plan, "shards": shards})
    (dest / PARTIAL).unlink()
    return {"images": n, "shards": shards, "done_before": shards - len(todo), "load_size": load_size, "dest": str(dest),
            "bytes": sum((dest / f"{_shard_name(s)}.bin").stat().st_size for s in range(shards)), "already": False}


def _finished(dest: Path, settings: dict) -> dict:
    """The summary of ``dest``, a prepared folder, when ``settings`` match how it was prepared."""
    meta = json.loads((dest / MANIFEST).read_text())
    if {k: meta.get(k) for k in settings} != settings:
        raise ConfigError(f"{dest} is a prepared folder of other images or settings: choose another folder")
    return {"images": len(meta["files"]), "shards": meta["shards"], "done_before": meta["shards"],
            "bytes": sum(f.stat().st_size for f in dest.glob("shard-*.bin")), "load_size": meta["load_size"],
            "dest": str(dest), "already": True}


def _write_shard(name: Path, loader, bar) -> None:
    """Write the encoded images ``loader`` gives as the shard ``name``: the data first, then its index, each
    renamed into place (a shard whose index exists is whole)."""
    lengths = []
    try:
        with open(f"{name}.bin.tmp", "wb") as f:
            for batch in loader:
                f.write(b"".join(batch))
                lengths += [len(b) for b in batch]
                bar.update(len(batch))
        os.replace(f"{name}.bin.tmp", f"{name}.bin")
        np.save(f"{name}.idx.tmp.npy", np.asarray(lengths, dtype=np.int32))
        os.replace(f"{name}.idx.tmp.npy", f"{name}.idx.npy")
    except OSError as e:  # disk full, quota, permissions
        raise ConfigError(f"could not write {name}.bin ({e.strerror or e}); the shards written so far are kept: "
                          f"free disk space, then run the same 'deepcluster prepare' again (it resumes)") from None


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj))
