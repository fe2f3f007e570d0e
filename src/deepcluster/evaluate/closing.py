"""The run's closing evaluation: how well its features cluster and vote, next to the same network at random
initialisation and the pixels, all measured in the same run on the same images."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..data import drawn, make_loader
from ..features import Reading, extract_features, fc_and_conv
from ..models import DeepClusterNet
from ..preprocess import PCAWhitening, l2_normalize, preprocess_features
from ..views import center_view
from .clustering import kmeans_quality
from .knn import knn_accuracy
from .layers import conv_grids, conv_shapes, probe_dims_default


def pixel_features(dataset, size: int, workers: Optional[int] = 0, max_side: int = 32) -> np.ndarray:
    """Raw pixels of the centre view at ``size`` px in [0, 1], ``(N, C * s * s)``, downsampled to at most
    ``max_side`` px so large images stay a fair and affordable baseline."""
    zeros, ones = (0.0,) * dataset.channels, (1.0,) * dataset.channels
    prepare = lambda images: center_view(images, size, zeros, ones)
    forward = lambda x: (F.adaptive_avg_pool2d(x, max_side) if size > max_side else x).flatten(1)
    # batches of 256: a batch's float views stay a few hundred MB at 224 px (1024 took 1.6x as long)
    loader = make_loader(dataset, range(len(dataset)), 256, workers)
    return extract_features(forward, loader, len(dataset), prepare, torch.device("cpu"), None)


def closing_grid(model: DeepClusterNet, channels: int, device) -> tuple[int, int]:
    """``(pooling grid, floats per image)`` of the last conv layer as the closing evaluation and the probes read it
    (in :func:`closing_features`, beside the fc features)."""
    shapes = conv_shapes(model, channels, model.image_size, device)
    grid = conv_grids(shapes, probe_dims_default(model.image_size))[-1]
    return grid, shapes[-1][0] * grid * grid


# The kNN database of --eval sample: at most this many GiB of features (fc + pooled last conv, float32) per
# network: every training image of Fashion-MNIST with the small net (60,000 x 11 KB), about 20,000 with AlexNet.
KNN_DATABASE_GB = 1.0


def closing_splits(train, val, mode: str, images: int, seed: int) -> tuple:
    """``(scored, database, images of the split scored)`` of the closing evaluation: the validation images when
    labelled, else the training images when labelled (else none: ``(None, None, 0)``, as with ``mode`` "none");
    the kNN database is the training images when another split is scored, else None (leave-one-out within the
    scored images). With ``mode`` "sample", the scored images are a seeded stratified draw of at most ``images``
    (the database is bounded by :func:`evaluate_features`)."""
    labelled = lambda ds: ds is not None and ds.targets is not None
    scored = val if labelled(val) else train if labelled(train) else None
    if mode == "none" or scored is None:
        return None, None, 0
    db = train if scored is val and labelled(train) else None
    return (drawn(scored, images, seed) if mode == "sample" else scored), db, len(scored)


@dataclass(frozen=True)
class Closing:
    """How the closing evaluation runs: images read as ``reading`` says (the run's batch size and workers, in the
    precision of everything it evaluates), the training's clustering input whitened to ``pca_dim``, k-means
    scored over ``seeds`` seeds from ``seed``; ``random_net(channels)`` builds the run's network at its seeded
    random initialisation (the one epoch 1 started from); the kNN database is drawn down to ``database_gb`` GiB
    of features per network (None: all of it)."""
    reading: Reading
    pca_dim: int
    seeds: int
    seed: int
    random_net: Callable
    database_gb: Optional[float] = None  # the kNN database's cap (GiB of features per network); None: every image


def closing_features(model: DeepClusterNet, dataset, device: torch.device, reading: Reading
                     ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(fc features, last conv layer pooled as for the linear probes)`` of every image's centre view, both from
    one pass (under torchrun each process extracts its share): on rank 0, None on the others."""
    grid = closing_grid(model, dataset.channels, device)[0]
    return fc_and_conv(model, dataset, device, replace(reading, conv_grid=grid))


def _features(net, dataset, given: dict, device, reading: Reading):
    """``net``'s :func:`closing_features` of ``dataset``, taken from ``given`` when there; ``(None, None)`` on the
    ranks that hold none."""
    return (given[dataset] if dataset in given else closing_features(net, dataset, device, reading)) or (None, None)


def evaluate_features(model: DeepClusterNet, dataset, device: torch.device, how: Closing, db=None,
                      known: Optional[dict] = None, of: Optional[int] = None) -> dict:
    """The run's closing evaluation on a labelled split: k-means with the true number of classes (the best of 10
    k-means++ starts, mean of ``how.seeds`` seeds) on the fc features of the trained network and of the same
    network at its random initialisation, each L2-normalised and PCA-whitened + L2 (the training's
    pre-processing), and on the three simple pixel baselines: raw, L2-normalised, PCA-50 + L2. ``results`` lists
    one row per (features, pre-processing). ``knn`` gives, for the trained and random-init networks' fc features
    and last conv layer (average-pooled as for the linear probes) and for the pixels, the weighted kNN top-1
    (k = 20, cosine) of each image of ``dataset`` voted by the labelled images ``db`` (the training images; None:
    ``dataset`` itself, each image left out of its own vote). ``known``: ``{(network, split): its
    closing_features}`` ("trained" or "random-init") for what the caller has already (one process only; not
    extracted again), optionally followed by the fc features PCA-whitened to ``how.pca_dim`` and L2-normalised
    as the run clustered them (fitted on every image of the split: not computed again). Each network reads each
    split once (:func:`closing_features`); under torchrun every process extracts its share and rank 0 does the
    rest (the others get {}). ``of``: the images of the split ``dataset`` was drawn from (itself when None).
    ``db`` is drawn down to ``how.database_gb`` GiB of features per network, stratified and seeded."""
    inputs, knn, last = [], [], f"conv{model.n_conv}"
    if db is not None and how.database_gb is not None:
        width = model.feature_dim + closing_grid(model, dataset.channels, device)[1]
        db = drawn(db, max(1, int(how.database_gb * 2 ** 30 // (4 * width))), how.seed)
    for name, net in (("trained", model), ("random-init", None)):
        given = {ds: v for (which, ds), v in (known or {}).items() if which == name}
        if net is None and not all(ds in given for ds in (dataset, db) if ds is not None):
            net = how.random_net(dataset.channels)  # seeded: the network epoch 1 started from
        f, conv, *whitened = _features(net, dataset, given, device, how.reading.called(f"eval {name}"))
        f_db, conv_db, *_ = _features(net, db, given, device, how.reading.called(f"eval {name} (kNN)")) \
            if db is not None else (None, None)
        if not dist.is_main():
            continue
        inputs += [(name, "L2", l2_normalize(f)),
                   (name, f"PCA-whitened {how.pca_dim} + L2",
                    whitened[0] if whitened else preprocess_features(f, how.pca_dim))]
        knn += [(name, "fc", f, f_db), (name, last, conv, conv_db)]
    if not dist.is_main():
        return {}
    size = model.image_size
    workers = how.reading.workers
    pixels = pixel_features(dataset, size, workers)
    inputs += [("pixels", "raw", pixels), ("pixels", "L2", l2_normalize(pixels)),
               ("pixels", "PCA-50 + L2", l2_normalize(PCAWhitening(50, whiten=False).fit_transform(pixels)))]
    knn.append(("pixels", "raw", pixels, pixel_features(db, size, workers) if db is not None else None))
    results = [{"features": name, "preprocessing": prep,
                **kmeans_quality(x, dataset.targets, seeds=how.seeds, seed=how.seed)}
               for name, prep, x in inputs]
    knn_rows = [{"features": name, "layer": layer, "top1": knn_accuracy(x, dataset.targets) if x_db is None else
                 knn_accuracy(x_db, db.targets, x, dataset.targets)} for name, layer, x, x_db in knn]
    return {"split": dataset.name, "images": len(dataset), "of": of or len(dataset), "k": results[0]["k"],
            "seeds": how.seeds, "restarts": results[0]["restarts"], "results": results,
            "knn": {"k": 20, "database": db.name if db is not None else "leave-one-out",
                    "database_images": len(db) if db is not None else len(dataset), "results": knn_rows}}
