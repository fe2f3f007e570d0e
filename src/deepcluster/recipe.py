"""Settings chosen from the data: the ``auto`` recipe (the default) and the reference's ``paper`` recipe.

A setting left unset (``None`` in :class:`~deepcluster.config.Config`) is filled by the run's recipe; one the user
gives, on the command line or in ``--config``, always wins. ``auto`` looks at the training images (how many, how
large, whether their colours carry anything) and sets what made DeepCluster learn on data of that size in the
measured runs of ``docs/recipe.md``; ``paper`` gives the reference implementation's ImageNet settings.

The rules are pure functions of a :class:`DataProfile`, so each is tested on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .config import Config

# The settings a recipe fills when the user leaves them unset (their metadata says so).
RECIPE_FIELDS = Config.settings(recipe=True)

# The reference implementation's settings (facebookresearch/deepcluster, its README's ImageNet command).
PAPER = {"arch": "alexnet", "sobel": True, "k": 10000, "pca_dim": 256, "epochs": 200, "batch_size": 256,
         "reassign": 1.0, "lr": 0.05, "lr_schedule": "constant", "crop_scale": 0.08}

# Optimisation steps a freshly initialised head needs between two clusterings to learn the pseudo-labels at all
# (docs/recipe.md: with 4 steps an epoch the loss never left ln k).
MIN_STEPS_PER_CLUSTERING = 125

# Up to this many images the recipe's rules were measured (Fashion-MNIST has 60,000); ImageNet's 1.28M is where the
# paper's settings were.
SMALL_DATA_IMAGES = 100_000
IMAGENET_IMAGES = 1_280_000


@dataclass(frozen=True)
class DataProfile:
    """What the auto recipe looks at: the number of training images, the median of their shorter sides in
    pixels, and whether their colours carry information (False for grey images, even when stored as RGB)."""
    images: int
    side: int
    colour: bool


def profile(dataset, sample: int = 64) -> DataProfile:
    """The :class:`DataProfile` of a dataset: sides from the files' headers (an :class:`ImageFolder` records
    them when it scans) or the stored images, colour from up to ``sample`` images spread over the dataset."""
    n = len(dataset)
    sizes = getattr(dataset, "sizes", None)
    side = int(np.median([min(s) for s in sizes])) if sizes else int(dataset.load_size)
    if dataset.channels == 1:
        return DataProfile(n, side, False)
    picks = np.linspace(0, n - 1, min(sample, n)).round().astype(int)
    return DataProfile(n, side, any(is_colour(dataset[int(i)][0]) for i in picks))


def is_colour(image, tolerance: float = 4.0) -> bool:
    """Whether a ``uint8 (C, H, W)`` image has colour: its channels differ by more than ``tolerance`` grey levels
    on average (JPEG noise in a grey picture stays below 2)."""
    x = image.float()
    return bool((x.max(0).values - x.min(0).values).mean() > tolerance)


def batch_size_for(n: int) -> int:
    """256 (the paper's) from 3,072 images on; below, the largest power of two up to N / 12 (at least 32), so
    that a pass over a small folder is a dozen steps or more, not a handful."""
    return int(min(256, max(32, 2 ** math.floor(math.log2(n / 12)))))


def reassign_for(n: int, batch_size: int) -> float:
    """Passes between two clusterings: one (the paper's) when a pass has at least
    :data:`MIN_STEPS_PER_CLUSTERING` steps, else as many as give that many."""
    return float(max(1, math.ceil(MIN_STEPS_PER_CLUSTERING * batch_size / n)))


def k_for(n: int) -> int:
    """Clusters: 10 up to 100,000 images (at most one per two images), where over-clustering left the features
    no better than random ones (docs/recipe.md); from there a straight line to the paper's 10,000 at ImageNet's
    size (:data:`IMAGENET_IMAGES`), at most 10,000: no jump at any N."""
    if n <= SMALL_DATA_IMAGES:
        return max(2, min(10, n // 2))
    slope = (PAPER["k"] - 10) / (IMAGENET_IMAGES - SMALL_DATA_IMAGES)
    return int(min(PAPER["k"], round(10 + slope * (n - SMALL_DATA_IMAGES))))


def pca_dim_for(n: int) -> int:
    """Whitened dimensions of the clustering input: the paper's 256, at most one per 25 images (at least 8). Whitening
    more of a small folder's span gives every direction, noise included, unit variance: on the random network's
    features of nine folders of 300-3,000 images, k-means found almost nothing in 256 whitened dimensions (mean NMI
    0.23 against 0.62 L2-normalised) and as much as L2 from N / 25 on (``benchmarks/whitening.py``)."""
    return int(min(256, max(8, n // 25)))


# The auto recipe's rules in words, for the command line's help: keep them beside the rules they describe.
RULES = {
    "arch": "small; alexnet for ImageNet-like folders (over 100,000 images of 128 px or more)",
    "sobel": "on for grey images and ImageNet-like folders, off when the colours carry information",
    "k": "10 up to 100,000 images (at most one per two images), then a straight line to 10,000 at 1.28M",
    "pca_dim": "one per 25 images, from 8 to 256",
    "epochs": "20; 200 for ImageNet-like folders",
    "batch_size": "256 from 3,072 images on, else the largest power of two up to N / 12, at least 32",
    "reassign": f"1, or enough passes for {MIN_STEPS_PER_CLUSTERING} steps between two clusterings",
    "lr": "0.01; 0.05 for ImageNet-like folders",
    "lr_schedule": "cosine; constant for ImageNet-like folders",
    "crop_scale": "0.25; 0.08 for ImageNet-like folders",
}


def auto_settings(p: DataProfile) -> dict:
    """The auto recipe: every field of :data:`RECIPE_FIELDS` as a function of the data's profile."""
    large = p.images > SMALL_DATA_IMAGES and p.side >= 128  # ImageNet-like: the paper's network, on GPUs
    batch = batch_size_for(p.images)
    return {
        "arch": "alexnet" if large else "small",
        # Sobel drops colour: kept for grey data, where it helped, and on ImageNet-like data, as the paper had it
        "sobel": not p.colour or large,
        "k": k_for(p.images),
        "pca_dim": pca_dim_for(p.images),
        "epochs": 20 if not large else 200,  # Fashion-MNIST: 20 epochs cluster better than 10 (docs/recipe.md)
        "batch_size": batch,
        "reassign": reassign_for(p.images, batch),
        "lr": 0.01 if not large else 0.05,
        "lr_schedule": "cosine" if not large else "constant",
        "crop_scale": 0.25 if not large else 0.08,
    }


def left_to_recipe(cfg: Config) -> list[str]:
    """The settings ``cfg`` leaves unset, for its recipe to fill."""
    return [f for f in RECIPE_FIELDS if getattr(cfg, f) is None]


def take_saved(cfg: Config, saved: Config) -> Config:
    """``cfg`` with the settings it leaves unset taken from ``saved``, the config of the run it resumes: a
    resumed run continues as it was trained, whatever the recipe would choose today."""
    return replace(cfg, **{f: getattr(saved, f) for f in left_to_recipe(cfg) if getattr(saved, f) is not None})


def resolve(cfg: Config, data: Optional[DataProfile] = None) -> Config:
    """``cfg`` with every setting it leaves unset filled by its recipe; the auto recipe needs the training
    images' profile (``data``) when something is left to it."""
    todo = left_to_recipe(cfg)
    if not todo:
        return cfg
    if cfg.recipe == "paper":
        values = PAPER
    elif data is None:
        raise ValueError("the auto recipe needs the training images' profile to choose " + ", ".join(todo))
    else:
        values = auto_settings(data)
    return replace(cfg, **{f: values[f] for f in todo})


def describe(given: Config, cfg: Config, data: Optional[DataProfile] = None) -> str:
    """One line for the start of a run: which recipe chose what. ``given`` is the config before :func:`resolve`,
    ``cfg`` after it."""
    chosen = left_to_recipe(given)
    if not chosen:
        return "recipe: none needed, every setting it chooses was given"
    what = (f" for {data.images} {'colour' if data.colour else 'grey'} images of about {data.side} px"
            if data is not None and cfg.recipe == "auto" else "")
    return (f"recipe {cfg.recipe}{what}: " + ", ".join(f"{f} {getattr(cfg, f)}" for f in chosen)
            + " (options given win)")
