"""One typed configuration for a DeepCluster run, validated in one place.

Every field is a command-line option (``--field-name``) and a key of the YAML config file; the resolved config is
printed at start and saved as ``RUN_DIR/config.yaml`` and inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

ARCHS = ("small", "alexnet", "vgg16")
METHODS = ("v1", "v2")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EXTRACT_PRECISIONS = ("auto", "training", "fp32", "bf16", "fp16", "int8")
RECIPES = ("auto", "paper")
DECODES = ("auto", "cpu", "device")


class DeepClusterError(Exception):
    """An error meant for the user: its message is one line that says what is wrong and how to fix it."""


class ConfigError(DeepClusterError, ValueError):
    """A bad setting or bad input, found before anything is written."""


class TrainingError(DeepClusterError, RuntimeError):
    """Training cannot go on (a non-finite loss, say); the last checkpoint is left as it was."""


def _opt(help: str, default: Any = None, **kw) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # data
    data: str = _opt("'fashion-mnist' or a folder of images (searched recursively)", "fashion-mnist")
    data_root: Optional[str] = _opt("folder holding the built-in dataset's files (default: Debian's path)")
    val_data: Optional[str] = _opt("held-out folder of images for the final evaluation "
                                   "(fashion-mnist uses its test split)")
    image_size: Optional[int] = _opt("network input size in pixels (default: 28 for fashion-mnist, "
                                     "32 for the small net on folders, 224 for alexnet/vgg16)")
    subset: Optional[int] = _opt("use only the first N training images (quick tries)")
    strict: bool = _opt("stop on unreadable image files instead of skipping them with a warning", False)
    # model
    recipe: str = _opt("where the settings left unset come from: auto (chosen from the training images: their "
                       "number, size and colour; docs/recipe.md) or paper (the reference's ImageNet settings: "
                       "alexnet, k 10000, lr 0.05 constant, 200 epochs)", "auto")
    arch: Optional[str] = _opt("network: " + ", ".join(ARCHS) + " (recipe: small; alexnet for over 100,000 "
                               "images of 128 px or more)")
    sobel: Optional[bool] = _opt("fixed Sobel input filter (grayscale + two edge kernels), as in the paper "
                                 "(recipe: on for grey images, off when the colours carry information)")
    method: str = _opt("v1: the paper's DeepCluster (fresh linear head each epoch, uniform sampling); v2: "
                       "DeepCluster-v2 (prototypes = k-means centroids of a memory bank of projections, nothing "
                       "re-initialised)", "v1")
    proj_dim: int = _opt("v2: dimension of the normalised projection the prototypes live in", 128)
    temperature: float = _opt("v2: temperature of the cosine logits", 0.1)
    bank: str = _opt("v2: what the memory bank holds: 'train' (each image's projection from the previous epoch's "
                     "training pass, as in SwAV's DeepCluster-v2) or 'centre' (a centre-view, eval-mode pass at "
                     "the start of each epoch: no crop or dropout noise, one extraction pass more)", "train")
    # clustering
    clustering: str = _opt("kmeans, or pic: Power Iteration Clustering on a k-NN graph of the features, which "
                           "finds its own number of clusters (--k is then unused); v1 only", "kmeans")
    k: Optional[int] = _opt("number of k-means clusters (the paper: 10000 on ImageNet; recipe: 10 up to "
                            "100,000 images, then growing linearly to 10,000 at 1.28M)")
    overcluster: str = _opt("k of extra clustering heads, comma-separated (e.g. 50,100): each epoch also clusters "
                            "the features into each of these numbers of clusters, and a head per clustering is "
                            "trained beside the main one (v1, k-means)", "")
    pca_dim: Optional[int] = _opt("PCA-whitening dimension before k-means (capped at the feature dimension; "
                                  "recipe: 256)")
    pca_sample: int = _opt("images the PCA is fitted on each epoch (all when N is not larger); the others are "
                           "projected as they are extracted, so clustering holds N x pca_dim floats", 65536)
    kmeans_iters: int = _opt("k-means iterations per epoch", 20)
    kmeans_restarts: int = _opt("k-means starts per clustering, the lowest objective kept: 1 (the paper's) starts "
                                "from random points, more from k-means++ seeds", 1)
    pic_neighbors: int = _opt("PIC: neighbours of each image in the graph", 5)
    pic_sigma: float = _opt("PIC: edge weight exp(-d^2 / sigma^2) on squared distances d^2", 0.2)
    pic_alpha: float = _opt("PIC: weight of the graph term in the power iterations", 0.001)
    pic_iters: int = _opt("PIC: power iterations", 200)
    pic_singletons: bool = _opt("PIC: move images left alone in a cluster to their nearest neighbour's cluster", True)
    pic_graph: str = _opt("PIC: how the k-NN graph is searched: exact, ivf (faiss's approximate IVF index; its "
                          "recall, measured on 1,000 images, goes to the log as knn_recall), or auto (exact on a "
                          "GPU and up to 100,000 images; ivf above, on a CPU)", "auto")
    # optimisation
    epochs: Optional[int] = _opt("number of DeepCluster epochs (recipe: 20; 200 at ImageNet scale)")
    batch_size: Optional[int] = _opt("mini-batch size (recipe: 256 from 3,072 images on, else about N / 12, at "
                                     "least 32)")
    reassign: Optional[float] = _opt("passes over the images between two clusterings (the reference's "
                                     "--reassign): each epoch clusters once, then trains on reassign x N images "
                                     "drawn uniformly over clusters (recipe: 1, or enough passes for 125 steps)")
    lr: Optional[float] = _opt("SGD learning rate of the network and of the head (recipe: 0.01; 0.05 at "
                               "ImageNet scale)")
    lr_schedule: Optional[str] = _opt("constant, or cosine: each epoch's lr follows a half cosine from --lr down "
                                      "towards 0 over --epochs (recipe: cosine; constant at ImageNet scale)")
    reset_every: int = _opt("every this many epochs, shrink the last conv layer and the fc block towards a fresh "
                            "initialisation before clustering (soft reset, --reset-alpha); 0 never", 0)
    reset_alpha: float = _opt("soft reset: theta <- alpha * theta + (1 - alpha) * fresh init", 0.8)
    momentum: float = _opt("SGD momentum of the network (the head uses none)", 0.9)
    weight_decay: float = _opt("weight decay of the network and of the head", 1e-5)
    crop_scale: Optional[float] = _opt("smallest area fraction of the random resized crop (recipe: 0.25; the "
                                       "paper's 0.08 at ImageNet scale)")
    # run
    seed: int = _opt("random seed; every epoch derives its own seeds from it", 31)
    device: str = _opt("auto (CUDA when present), cpu or cuda", "auto")
    workers: Optional[int] = _opt("data-loading worker processes per training process; 0 loads in the main "
                                  "process. Default: none for images held in memory, and none on machines "
                                  "without a CUDA GPU (the network's threads use every core); else one per core of "
                                  "this process's share of the machine, less one, at most 16; decoding a folder "
                                  "into memory (--cache-gb), before training, takes one per core")
    cache_gb: float = _opt("GiB of decoded images an image folder may take in memory per process: a folder that "
                           "fits (and takes under half the free memory) is decoded once, before the first epoch, "
                           "and every pass reads memory instead of decoding files again; 0 never caches", 4.0)
    decode: str = _opt("where the JPEGs of a prepared folder (deepcluster prepare) are decoded in the epochs' "
                       "passes: auto (in batches on the GPU, nvJPEG, when the run is on CUDA; else by the loader), "
                       "cpu (by the loader), or device (in batches on the run's device, whichever it is)", "auto")
    precision: str = _opt("auto (bf16 autocast on CUDA GPUs, full precision on CPUs), fp32, bf16 or fp16 "
                          "(autocast for the network's passes; fp16 also scales the loss)", "auto")
    extract_precision: str = _opt("precision of the extraction pass of each epoch's clustering: auto (on CPUs: int8 "
                                  "from 10,000 images on those that multiply int8 in hardware, VNNI or AMX, from "
                                  "epoch 2; else bf16 on those that multiply bf16 in hardware, AMX or AVX-512 BF16; "
                                  "else as training), training (as --precision), fp32, bf16, fp16, or int8 (CPUs "
                                  "only, from epoch 2). Epoch 1, the final clustering, the closing evaluation and "
                                  "the exports use it too, except int8 (then --precision)", "auto")
    supervised: bool = _opt("train on the true labels instead of clusters: the supervised baseline of the "
                            "evaluation tables", False)
    eval_seeds: int = _opt("k-means restarts averaged in the final evaluation", 3)
    report: bool = _opt("write RUN_DIR/report/index.html at the end, and after an epoch while training when a "
                        "minute has passed since it was last written (a few seconds each)", True)
    tensorboard: bool = _opt("also log every epoch's numbers and a cluster image grid to RUN_DIR/tensorboard "
                             "(needs pip install 'deepcluster[tensorboard]')", False)

    def validate(self) -> "Config":
        """Raise ConfigError on the first bad field; return self."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        def need_if_set(name: str, ok, msg: str) -> None:  # a setting left to the recipe (None) is checked later
            if getattr(self, name) is not None:
                need(ok(getattr(self, name)), msg)

        need(self.recipe in RECIPES, f"unknown recipe '{self.recipe}': choose auto or paper (--recipe)")
        need(bool(self.data), "no data given: pass --data ('fashion-mnist' or a folder of images)")
        need_if_set("arch", lambda v: v in ARCHS,
                    f"unknown architecture '{self.arch}': choose one of {', '.join(ARCHS)} (--arch)")
        need(self.method in METHODS, f"unknown method '{self.method}': choose v1 or v2 (--method)")
        need(self.bank in ("train", "centre"), f"unknown bank '{self.bank}': choose train or centre (--bank)")
        need(self.proj_dim >= 2, f"proj_dim = {self.proj_dim} must be at least 2 (--proj-dim)")
        need(self.temperature > 0, f"temperature = {self.temperature} must be positive (--temperature)")
        need(self.device in DEVICES, f"unknown device '{self.device}': choose one of {', '.join(DEVICES)} (--device)")
        need_if_set("k", lambda v: v >= 2, f"k = {self.k} is too small: k-means needs at least 2 clusters (--k)")
        need(self.clustering in ("kmeans", "pic"),
             f"unknown clustering '{self.clustering}': choose kmeans or pic (--clustering)")
        need(self.clustering == "kmeans" or self.method == "v1",
             "--clustering pic works with --method v1: v2's prototypes are k-means centroids")
        need(self.pic_neighbors >= 1, f"pic_neighbors = {self.pic_neighbors} must be at least 1 (--pic-neighbors)")
        need(self.pic_sigma > 0, f"pic_sigma = {self.pic_sigma} must be positive (--pic-sigma)")
        need(0 < self.pic_alpha < 1, f"pic_alpha = {self.pic_alpha} must lie in (0, 1) (--pic-alpha)")
        need(self.pic_iters >= 1, f"pic_iters = {self.pic_iters} must be positive (--pic-iters)")
        need(self.pic_graph in ("auto", "exact", "ivf"),
             f"unknown PIC graph '{self.pic_graph}': choose auto, exact or ivf (--pic-graph)")
        need_if_set("epochs", lambda v: v >= 1, f"epochs = {self.epochs}: train at least one epoch (--epochs)")
        try:
            extra = self.overcluster_ks
        except ValueError:
            raise ConfigError(f"overcluster = {self.overcluster!r}: give numbers of clusters separated by commas, "
                              f"e.g. 50,100 (--overcluster)") from None
        need(all(k >= 2 for k in extra), f"overcluster = {self.overcluster!r}: every head needs at least 2 clusters")
        need(not extra or (self.method == "v1" and self.clustering == "kmeans"),
             "--overcluster works with --method v1 and k-means clustering")
        need(self.reset_every >= 0, f"reset_every = {self.reset_every} must be >= 0 (--reset-every; 0 never)")
        need(0 <= self.reset_alpha < 1, f"reset_alpha = {self.reset_alpha} must lie in [0, 1) (--reset-alpha)")
        need_if_set("reassign", lambda v: v > 0, f"reassign = {self.reassign} must be positive (--reassign)")
        need_if_set("batch_size", lambda v: v >= 1,
                    f"batch size = {self.batch_size} must be positive (--batch-size)")
        need_if_set("pca_dim", lambda v: v >= 1, f"pca_dim = {self.pca_dim} must be positive (--pca-dim)")
        need(self.pca_sample >= 2, f"pca_sample = {self.pca_sample} must be at least 2 (--pca-sample)")
        need(self.precision in PRECISIONS,
             f"unknown precision '{self.precision}': choose one of {', '.join(PRECISIONS)} (--precision)")
        need(self.extract_precision in EXTRACT_PRECISIONS,
             f"unknown extract precision '{self.extract_precision}': choose one of "
             f"{', '.join(EXTRACT_PRECISIONS)} (--extract-precision)")
        need(self.kmeans_iters >= 1, f"kmeans_iters = {self.kmeans_iters} must be positive (--kmeans-iters)")
        need(self.kmeans_restarts >= 1,
             f"kmeans_restarts = {self.kmeans_restarts} must be at least 1 (--kmeans-restarts)")
        need_if_set("lr", lambda v: v > 0, f"lr = {self.lr} must be positive (--lr)")
        need_if_set("lr_schedule", lambda v: v in ("constant", "cosine"),
             f"unknown lr schedule '{self.lr_schedule}': choose constant or cosine (--lr-schedule)")
        need(0 <= self.momentum < 1, f"momentum = {self.momentum} must lie in [0, 1) (--momentum)")
        need(self.weight_decay >= 0, f"weight decay = {self.weight_decay} must be >= 0 (--weight-decay)")
        need_if_set("crop_scale", lambda v: 0 < v <= 1,
                    f"crop_scale = {self.crop_scale} must lie in (0, 1] (--crop-scale)")
        need(self.workers is None or self.workers >= 0, f"workers = {self.workers} must be >= 0 (--workers)")
        need(self.decode in DECODES, f"unknown decode '{self.decode}': choose one of {', '.join(DECODES)} (--decode)")
        need(self.cache_gb >= 0, f"cache_gb = {self.cache_gb} must be >= 0 (--cache-gb; 0 never caches)")
        need(self.eval_seeds >= 1, f"eval_seeds = {self.eval_seeds} must be >= 1 (--eval-seeds)")
        need(self.image_size is None or self.image_size >= 8,
             f"image size {self.image_size} is too small: use at least 8 pixels (--image-size)")
        need(self.subset is None or self.subset >= 2, f"subset = {self.subset}: keep at least 2 images (--subset)")
        return self

    def check_data(self, n: int, labelled: bool, name: str = "the training images") -> "Config":
        """The rules the training images (``name``: ``n`` of them, with labels or not) set, checked once before
        training: the supervised baseline needs labels, and no clustering asks for more clusters than images."""
        if self.supervised:
            if not labelled:
                raise ConfigError(f"--supervised needs labels, and {name} has none: put the images in one subfolder "
                                  f"per class")
            return self
        if self.k > n and self.clustering == "kmeans":
            raise ConfigError(f"k = {self.k} clusters but only {n} images: lower --k to at most {n}")
        if any(k > n for k in self.overcluster_ks):
            raise ConfigError(f"--overcluster {self.overcluster} asks for more clusters than the {n} images: keep "
                              f"every k at most {n}")
        return self

    @property
    def overcluster_ks(self) -> list[int]:
        """The ``overcluster`` setting as a list of ints (empty when none)."""
        return [int(v) for v in self.overcluster.replace(" ", "").split(",") if v]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                              f"known ones are listed by 'deepcluster train --help'")
        cfg = cls(**d)
        for f in dataclasses.fields(cls):  # YAML may give ints for floats and the like: coerce once, here
            v = getattr(cfg, f.name)
            typ = f.type.replace("Optional[", "").rstrip("]")
            if v is None or typ == "str":
                continue
            try:
                setattr(cfg, f.name, {"int": int, "float": float, "bool": _to_bool}[typ](v))
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: '{f.name}' should be {typ}, got {v!r}") from None
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: check the path given to --config")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping of setting: value")
        return cls.from_dict(d, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return v.lower() in ("true", "yes", "1", "on")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(v)
