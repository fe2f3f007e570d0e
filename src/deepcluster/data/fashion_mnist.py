"""Fashion-MNIST, the built-in dataset, from the IDX files of Debian's ``dataset-fashion-mnist``."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..settings import ConfigError
from .memory import TensorImages

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


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
    return TensorImages(images, labels, FASHION_MNIST_CLASSES, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD,
                        name=f"fashion-mnist/{split}")
