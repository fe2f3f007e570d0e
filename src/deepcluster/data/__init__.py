"""Datasets that yield ``(image, index)``, and the loader that batches them.

Images come out as ``uint8`` tensors ``(C, S, S)`` at a fixed *load size* S; the views the network sees (the
centre view for feature extraction, the augmented view for training) are made from whole batches on the device
by :mod:`deepcluster.views`. Labels, when a dataset has them, are kept in ``targets`` for evaluation only:
training never reads them.
"""
from __future__ import annotations

from ..settings import ConfigError, DataSettings, RuntimeSettings
from .cache import in_memory
from .draw import draw_indices, drawn
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_ROOT,
    FASHION_MNIST_STD,
    fashion_mnist,
    read_idx,
)
from .folder import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, ImageFolder, to_rgb_array
from .loader import DeviceBatches, auto_workers, decodes_on_device, make_loader
from .memory import TensorImages
from .prepared import JpegBatch, PreparedImages, check_not_partial, is_prepared, prepare

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_ROOT", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS",
           "DeviceBatches", "ImageFolder", "JpegBatch", "PreparedImages", "TensorImages", "auto_workers",
           "decodes_on_device", "default_image_size", "draw_indices", "drawn", "fashion_mnist",
           "image_format", "in_memory", "load_datasets", "load_size_for", "make_loader", "open_folder",
           "open_training_images", "prepare", "read_idx", "to_rgb_array"]


def image_format(data: str) -> tuple[int, tuple, tuple]:
    """``(channels, mean, std)`` of the images ``data`` names, as the datasets deliver them: the built-in
    dataset's grey, or a folder's RGB with ImageNet's normalisation."""
    if data == "fashion-mnist":
        return 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return 3, IMAGENET_MEAN, IMAGENET_STD


def default_image_size(data: DataSettings, arch: str | None) -> int:
    """The network's input size: the one given, else the built-in dataset's 28 px, else the network's (224 for
    alexnet and vgg16, 32 for the small net; the small net while the recipe has not chosen)."""
    if data.image_size:
        return data.image_size
    if data.data == "fashion-mnist":
        return 28
    return 224 if arch in ("alexnet", "vgg16") else 32


def load_size_for(image_size: int) -> int:
    """Images are stored a little larger than the network input (the paper: 256 for 224) so that the centre
    view is a centre crop; tiny images (<= 64 px) are used as they are."""
    return image_size if image_size <= 64 else round(image_size * 256 / 224)


def open_folder(path, load_size: int, strict: bool = False):
    """The images of the folder ``path``: a prepared folder (``deepcluster prepare``) read from its shards, any
    other folder scanned as an :class:`ImageFolder`; a half-prepared one is refused."""
    if is_prepared(path):
        return PreparedImages(path, load_size)
    check_not_partial(path)
    return ImageFolder(path, load_size, strict)


def open_training_images(cfg: DataSettings, image_size: int, seed: int = 0):
    """The training images of ``cfg`` (its ``--subset`` drawn with ``seed``), opened but not decoded, at the load
    size of ``image_size`` px networks: a folder is scanned (its files' headers read), the built-in dataset read.
    What the recipe profiles before the run's settings are known; :func:`load_datasets` takes it from there."""
    if cfg.data == "fashion-mnist":
        train = fashion_mnist("train", cfg.data_root)
    else:
        train = open_folder(cfg.data, load_size_for(image_size), cfg.strict)
    if cfg.subset:
        train = train.take(range(min(cfg.subset, len(train)))) if cfg.subset_draw == "first" else \
            drawn(train, cfg.subset, seed)  # random, also when unset
    if len(train) < 2:
        raise ConfigError(f"{train.name} holds {len(train)} image(s): DeepCluster needs at least 2")
    return train


def load_datasets(cfg: DataSettings, runtime: RuntimeSettings, size: int, cache: bool = True, train=None):
    """Return ``(train, val)`` datasets of the data settings for ``size`` px networks; ``val`` is None when no
    held-out split exists. ``train``, when given, is the result of :func:`open_training_images` (not scanned
    again). With ``cache``, image folders that fit in ``runtime.cache_gb`` are decoded into memory
    (:func:`in_memory`, ``runtime.workers`` processes), the training set first; a prepared folder is decoded where
    ``runtime.decode`` says."""
    train = open_training_images(cfg, size, runtime.seed) if train is None else train
    if cfg.data == "fashion-mnist":
        val = fashion_mnist("test", cfg.data_root)
        if size != 28:
            raise ConfigError(f"fashion-mnist images are 28 px: drop --image-size {size} or set it to 28")
    else:
        train.load_size = load_size_for(size)
        val = open_folder(cfg.val_data, load_size_for(size), cfg.strict) if cfg.val_data else None
        for ds in (train, val):
            if isinstance(ds, PreparedImages):
                ds.decoding = runtime.decode
    if cache and runtime.cache_gb > 0:
        from .. import distributed as dist

        desc = "decoding images into memory" if dist.is_main() else None
        train = in_memory(train, runtime.cache_gb, runtime.workers, desc)
        if val is not None:
            left = runtime.cache_gb - (train.images.numel() / 2 ** 30 if isinstance(train, TensorImages) else 0)
            val = in_memory(val, left, runtime.workers, desc)
    return train, val
