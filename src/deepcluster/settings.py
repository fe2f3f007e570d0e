"""The settings of a run, in six sections, and what the package knows of each setting (its metadata): the one
source of the checks, the resume rules, the recipe's fields and the command line's help.

:class:`~deepcluster.config.Config` is the six sections in one flat object, as the command line and the YAML file
give them; the code below the run takes a section (or a small value object made from several), never the whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

ARCHS = ("small", "alexnet", "vgg16")
METHODS = ("v1", "v2")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EXTRACT_PRECISIONS = ("auto", "training", "fp32", "bf16", "fp16", "int8")
RECIPES = ("auto", "paper")
DECODES = ("auto", "cpu", "device")
SUBSET_DRAWS = ("random", "first")
EVALS = ("sample", "full", "none")


class DeepClusterError(Exception):
    """An error meant for the user: its message is one line that says what is wrong and how to fix it."""


class ConfigError(DeepClusterError, ValueError):
    """A bad setting or bad input, found before anything is written."""


class TrainingError(DeepClusterError, RuntimeError):
    """Training cannot go on (a non-finite loss, say); the last checkpoint is left as it was."""


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


# What a setting's metadata may say besides its help, and what it says when silent (see _opt).
_META = {"check": (), "needs": None, "recipe": False, "resumable": False, "clustering_only": False, "legacy": None}


def _opt(help: str, default: Any = None, **meta) -> Any:
    """A setting and what the rest of the package knows of it, in one place:

    - ``help``: its line in ``deepcluster train --help``;
    - ``check``: ``(ok(value), message)`` pairs, the message formatted with ``{v}`` (the value);
    - ``needs``: ``({other setting: value}, message)``: a value other than the default needs those settings;
    - ``recipe``: left unset (None), the run's recipe chooses it (:mod:`deepcluster.recipe` has the rule);
    - ``resumable``: a resumed run may change it (how or how far it computes, not what);
    - ``clustering_only``: a supervised run never reads it (so resuming one ignores it);
    - ``legacy``: its value in runs written before it existed (such a run resumes as it was trained)."""
    unknown = set(meta) - set(_META)
    if unknown:
        raise TypeError(f"a setting's metadata: unknown {sorted(unknown)}")
    return field(default=default, metadata={"help": help, **_META, **meta})


def _one_of(choices, what: str, flag: str) -> tuple:
    return (lambda v: v in choices), f"unknown {what} '{{v}}': choose one of {', '.join(choices)} ({flag})"


def _positive(name: str, flag: str) -> tuple:
    return (lambda v: v > 0), f"{name} = {{v}} must be positive ({flag})"


def _at_least(n, name: str, flag: str) -> tuple:
    return (lambda v: v >= n), f"{name} = {{v}} must be at least {n} ({flag})"


def _ks(v: str) -> list[int]:
    """An ``overcluster`` value as a list of ints (empty when none); ValueError when it is not one."""
    return [int(k) for k in v.replace(" ", "").split(",") if k]


def _ks_ok(v: str) -> bool:
    try:
        _ks(v)
    except ValueError:
        return False
    return True


@dataclass
class DataSettings:
    """The images: where they are, how many, at what size."""
    data: str = _opt("'fashion-mnist' or a folder of images (searched recursively)", "fashion-mnist",
                     check=[(bool, "no data given: pass --data ('fashion-mnist' or a folder of images)")])
    data_root: Optional[str] = _opt("folder holding the built-in dataset's files (default: Debian's path)",
                                    resumable=True)
    val_data: Optional[str] = _opt("held-out folder of images for the final evaluation "
                                   "(fashion-mnist uses its test split)")
    image_size: Optional[int] = _opt("network input size in pixels (default: 28 for fashion-mnist, "
                                     "32 for the small net on folders, 224 for alexnet/vgg16)",
                                     check=[(lambda v: v >= 8, "image size {v} is too small: use at least 8 pixels "
                                                               "(--image-size)")])
    subset: Optional[int] = _opt("use only N of the training images (quick tries), drawn as --subset-draw says",
                                 check=[(lambda v: v >= 2, "subset = {v}: keep at least 2 images (--subset)")])
    subset_draw: Optional[str] = _opt("how --subset draws its images: random (the default: seeded by --seed, "
                                      "stratified when the folder's subfolders label them, so every class keeps "
                                      "its share) or first (the first N in sorted order). A resumed run keeps its "
                                      "own", check=[_one_of(SUBSET_DRAWS, "subset draw", "--subset-draw")],
                                      legacy="first")
    strict: bool = _opt("stop on unreadable image files instead of skipping them with a warning", False,
                        resumable=True)


@dataclass
class ModelSettings:
    """What is learned: the recipe that fills the settings left unset, the network, the method (v1, v2 or
    the supervised baseline) and its head."""
    recipe: str = _opt("where the settings left unset come from: auto (chosen from the training images: "
                       "their number, size and colour; docs/recipe.md) or paper (the reference's ImageNet "
                       "settings)", "auto", check=[(lambda v: v in RECIPES, "unknown recipe '{v}': choose auto or "
                                                                            "paper (--recipe)")], resumable=True)
    arch: Optional[str] = _opt("network: " + ", ".join(ARCHS), check=[_one_of(ARCHS, "architecture",
                                                                                       "--arch")], recipe=True)
    sobel: Optional[bool] = _opt("fixed Sobel input filter (grayscale + two edge kernels), as in the paper",
                                 recipe=True)
    init: Optional[str] = _opt("start from these weights, not a random initialisation (the head stays fresh): a "
                               "run directory (a run on other data), a checkpoint of the reference DeepCluster code "
                               "(AlexNet or VGG-16), or a torchvision state dict of vgg16_bn. The network (--arch, "
                               "--sobel, --image-size) is theirs unless given; given, it must fit them. With "
                               "--epochs 0: cluster, export and report the data with that network as it is")
    method: str = _opt("v1: the paper's DeepCluster (fresh linear head each epoch, uniform sampling); v2: "
                       "DeepCluster-v2 (prototypes = k-means centroids of a memory bank of projections, nothing "
                       "re-initialised)", "v1", check=[(lambda v: v in METHODS, "unknown method '{v}': choose v1 or "
                                                                                "v2 (--method)")],
                       clustering_only=True)
    proj_dim: int = _opt("v2: dimension of the normalised projection the prototypes live in", 128,
                         check=[_at_least(2, "proj_dim", "--proj-dim")], clustering_only=True)
    temperature: float = _opt("v2: temperature of the cosine logits", 0.1,
                              check=[_positive("temperature", "--temperature")], clustering_only=True)
    bank: str = _opt("v2: what the memory bank holds: 'train' (each image's projection from the previous "
                     "epoch's training pass, as in SwAV's DeepCluster-v2) or 'centre' (a centre-view, eval-mode pass "
                     "at the start of each epoch: no crop or dropout noise, one extraction pass more)", "train",
                     check=[(lambda v: v in ("train", "centre"), "unknown bank '{v}': choose train or centre "
                                                                 "(--bank)")], clustering_only=True)
    supervised: bool = _opt("train on the true labels instead of clusters: the supervised baseline "
                            "of the evaluation tables", False)


@dataclass
class ClusteringSettings:
    """How each epoch clusters: the algorithm, its numbers of clusters (one per head) and its space."""
    clustering: str = _opt("kmeans, or pic: Power Iteration Clustering on a k-NN graph of the "
                           "features, which finds its own number of clusters (--k is then unused); v1 only",
                           "kmeans", check=[(lambda v: v in ("kmeans", "pic"), "unknown clustering '{v}': choose "
                                                                               "kmeans or pic (--clustering)")],
                           needs=({"method": "v1"}, "--clustering pic works with --method v1: v2's prototypes "
                                                    "are k-means centroids"), clustering_only=True)
    k: Optional[int] = _opt("number of k-means clusters (the paper: 10000 on ImageNet)",
                            check=[(lambda v: v >= 2, "k = {v} is too small: k-means needs at least 2 clusters "
                                                      "(--k)")], recipe=True, clustering_only=True)
    overcluster: str = _opt("k of extra clustering heads, comma-separated (e.g. 50,100): each epoch "
                            "also clusters the features into each of these numbers of clusters, and a head per "
                            "clustering is trained beside the main one (v1, k-means)", "",
                            check=[(_ks_ok, "overcluster = {v!r}: give numbers of clusters separated by "
                                                     "commas, e.g. 50,100 (--overcluster)"),
                                   (lambda v: all(k >= 2 for k in _ks(v)),
                                    "overcluster = {v!r}: every head needs at least 2 clusters")],
                            needs=({"method": "v1", "clustering": "kmeans"},
                                   "--overcluster works with --method v1 and k-means clustering"))
    pca_dim: Optional[int] = _opt("PCA-whitening dimension before k-means (capped at the feature "
                                  "dimension)", check=[_positive("pca_dim", "--pca-dim")], recipe=True,
                                  clustering_only=True)
    pca_sample: int = _opt("images the PCA is fitted on each epoch (all when N is not larger); the "
                           "others are projected as they are extracted, so clustering holds N x pca_dim floats",
                           65536, check=[_at_least(2, "pca_sample", "--pca-sample")])
    kmeans_iters: int = _opt("k-means iterations per epoch", 20,
                             check=[_positive("kmeans_iters", "--kmeans-iters")], clustering_only=True)
    kmeans_restarts: int = _opt("k-means starts per clustering, the lowest objective kept: 1 (the "
                                "paper's) starts from random points, more from k-means++ seeds", 1,
                                check=[_at_least(1, "kmeans_restarts", "--kmeans-restarts")], clustering_only=True)
    pic_neighbors: int = _opt("PIC: neighbours of each image in the graph", 5,
                              check=[_at_least(1, "pic_neighbors", "--pic-neighbors")], clustering_only=True)
    pic_sigma: float = _opt("PIC: edge weight exp(-d^2 / sigma^2) on squared distances d^2", 0.2,
                            check=[_positive("pic_sigma", "--pic-sigma")], clustering_only=True)
    pic_alpha: float = _opt("PIC: weight of the graph term in the power iterations", 0.001,
                            check=[(lambda v: 0 < v < 1, "pic_alpha = {v} must lie in (0, 1) (--pic-alpha)")],
                            clustering_only=True)
    pic_iters: int = _opt("PIC: power iterations", 200, check=[_positive("pic_iters", "--pic-iters")],
                          clustering_only=True)
    pic_singletons: bool = _opt("PIC: move images left alone in a cluster to their nearest "
                                "neighbour's cluster", True, clustering_only=True)
    pic_graph: str = _opt("PIC: how the k-NN graph is searched: exact, ivf (faiss's approximate IVF "
                          "index; its recall, measured on 1,000 images, goes to the log as knn_recall), or auto "
                          "(exact on a GPU and up to 100,000 images; ivf above, on a CPU)", "auto",
                          check=[(lambda v: v in ("auto", "exact", "ivf"), "unknown PIC graph '{v}': choose auto, "
                                                                           "exact or ivf (--pic-graph)")],
                          clustering_only=True, legacy="exact")

    @property
    def overcluster_ks(self) -> list[int]:
        """The ``overcluster`` setting as a list of ints (empty when none)."""
        return _ks(self.overcluster)


@dataclass
class OptimisationSettings:
    """How the network is trained between two clusterings."""
    epochs: Optional[int] = _opt("number of DeepCluster epochs",
                                 check=[(lambda v: v >= 0, "epochs = {v}: give 0 (cluster with the network as it "
                                                           "is, no training) or more (--epochs)")],
                                 recipe=True, resumable=True)
    batch_size: Optional[int] = _opt("mini-batch size",
                                     check=[(lambda v: v >= 1, "batch size = {v} must be positive (--batch-size)")],
                                     recipe=True)
    reassign: Optional[float] = _opt("passes over the images between two clusterings (the "
                                     "reference's --reassign): each epoch clusters once, then trains on reassign x N "
                                     "images drawn uniformly over clusters", check=[_positive("reassign",
                                                                                              "--reassign")],
                                     recipe=True, legacy=1.0)
    lr: Optional[float] = _opt("SGD learning rate of the network and of the head",
                               check=[_positive("lr", "--lr")], recipe=True)
    lr_schedule: Optional[str] = _opt("constant, or cosine: each epoch's lr follows a half cosine "
                                      "from --lr down towards 0 over --epochs",
                                      check=[(lambda v: v in ("constant", "cosine"), "unknown lr schedule '{v}': "
                                              "choose constant or cosine (--lr-schedule)")], recipe=True)
    reset_every: int = _opt("every this many epochs, shrink the last conv layer and the fc block "
                            "towards a fresh initialisation before clustering (soft reset, --reset-alpha); 0 never",
                            0, check=[(lambda v: v >= 0, "reset_every = {v} must be >= 0 (--reset-every; 0 "
                                                         "never)")])
    reset_alpha: float = _opt("soft reset: theta <- alpha * theta + (1 - alpha) * fresh init", 0.8,
                              check=[(lambda v: 0 <= v < 1, "reset_alpha = {v} must lie in [0, 1) "
                                                            "(--reset-alpha)")])
    momentum: float = _opt("SGD momentum of the network (the head uses none)", 0.9,
                           check=[(lambda v: 0 <= v < 1, "momentum = {v} must lie in [0, 1) (--momentum)")])
    weight_decay: float = _opt("weight decay of the network and of the head", 1e-5,
                               check=[(lambda v: v >= 0, "weight decay = {v} must be >= 0 (--weight-decay)")])
    crop_scale: Optional[float] = _opt("smallest area fraction of the random resized crop",
                                       check=[(lambda v: 0 < v <= 1, "crop_scale = {v} must lie in (0, 1] "
                                                                     "(--crop-scale)")], recipe=True)


@dataclass
class RuntimeSettings:
    """Where and how the run computes: seed, device, loader, cache, precisions."""
    seed: int = _opt("random seed; every epoch derives its own seeds from it", 31)
    device: str = _opt("auto (CUDA when present), cpu or cuda", "auto",
                       check=[_one_of(DEVICES, "device", "--device")], resumable=True)
    workers: Optional[int] = _opt("data-loading worker processes per training process; 0 loads in the "
                                  "main process. Default: none for images held in memory, and none on machines "
                                  "without a CUDA GPU (the network's threads use every core); else one per core of "
                                  "this process's share of the machine, less one, at most 16; decoding a folder "
                                  "into memory (--cache-gb), before training, takes one per core",
                                  check=[(lambda v: v >= 0, "workers = {v} must be >= 0 (--workers)")],
                                  resumable=True)
    cache_gb: float = _opt("GiB of decoded images an image folder may take in memory per process: a "
                           "folder that fits (and takes under half the available memory) is decoded once, before the "
                           "first epoch, and every pass reads memory instead of decoding files again; 0 never "
                           "caches", 4.0, check=[(lambda v: v >= 0, "cache_gb = {v} must be >= 0 (--cache-gb; 0 "
                                                                    "never caches)")], resumable=True)
    decode: str = _opt("where the JPEGs of a prepared folder (deepcluster prepare) are decoded in the "
                       "epochs' passes: auto (in batches on the GPU, nvJPEG, when the run is on CUDA; else by the "
                       "loader), cpu (by the loader), or device (in batches on the run's device, whichever it is)",
                       "auto", check=[_one_of(DECODES, "decode", "--decode")], resumable=True)
    precision: str = _opt("auto (bf16 autocast on CUDA GPUs, full precision on CPUs), fp32, bf16 or "
                          "fp16 (autocast for the network's passes; fp16 also scales the loss)", "auto",
                          check=[_one_of(PRECISIONS, "precision", "--precision")], resumable=True)
    extract_precision: str = _opt("precision of the extraction pass of each epoch's clustering: auto (on "
                                  "CPUs: int8 from 10,000 images on those that multiply int8 in hardware, VNNI or "
                                  "AMX, from epoch 2; else bf16 on those that multiply bf16 in hardware, AMX or "
                                  "AVX-512 BF16; else as training), training (as --precision), fp32, bf16, fp16, or "
                                  "int8 (CPUs only, from epoch 2). Epoch 1, the final clustering, the closing "
                                  "evaluation and the exports use it too, except int8 (then --precision)", "auto",
                                  check=[_one_of(EXTRACT_PRECISIONS, "extract precision", "--extract-precision")],
                                  resumable=True, legacy="training")


@dataclass
class OutputSettings:
    """What a run leaves besides its checkpoint: the closing evaluation, the report, TensorBoard."""
    eval: str = _opt("the closing evaluation, on the labelled images: sample (at most --eval-images of them, a "
                     "seeded stratified draw, and a kNN database of the training images capped at 1 GiB of "
                     "features per network: its time and memory do not grow with the folder), full (every image; "
                     "kNN over all of them: for small folders only) or none", "sample",
                     check=[_one_of(EVALS, "evaluation", "--eval")], resumable=True)
    eval_images: int = _opt("images the closing evaluation scores with --eval sample", 10000,
                            check=[_at_least(2, "eval_images", "--eval-images")], resumable=True)
    eval_seeds: int = _opt("k-means restarts averaged in the final evaluation", 3,
                           check=[(lambda v: v >= 1, "eval_seeds = {v} must be >= 1 (--eval-seeds)")],
                           resumable=True)
    report: bool = _opt("write RUN_DIR/report/index.html at the end, and after an epoch while training "
                        "when a minute has passed since it was last written (a few seconds each)", True,
                        resumable=True)
    tensorboard: bool = _opt("also log every epoch's numbers and a cluster image grid to "
                             "RUN_DIR/tensorboard (needs pip install 'deepcluster[tensorboard]')", False,
                             resumable=True)


# The sections by name, in the order of the command line's options and of a run's config.yaml.
SECTIONS = {"data": DataSettings, "model": ModelSettings, "clustering": ClusteringSettings,
            "optimisation": OptimisationSettings, "runtime": RuntimeSettings, "output": OutputSettings}
