"""The run's closing evaluation: how well its features cluster and vote, next to the same network at random
initialisation and the pixels, all measured in the same run on the same images."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..config import Config
from ..data import make_loader
from ..device import amp_dtype
from ..features import centre_view_features, extract_features
from ..models import DeepClusterNet
from ..network import make_model
from ..preprocess import PCAWhitening, l2_normalize, preprocess_features
from ..views import center_view
from .clustering import kmeans_quality
from .knn import knn_accuracy
from .layers import layer_features


def pixel_features(dataset, size: int, workers: Optional[int] = 0, max_side: int = 32) -> np.ndarray:
    """Raw pixels of the centre view at ``size`` px in [0, 1], ``(N, C * s * s)``, downsampled to at most
    ``max_side`` px so large images stay a fair and affordable baseline."""
    zeros, ones = (0.0,) * dataset.channels, (1.0,) * dataset.channels
    prepare = lambda images: center_view(images, size, zeros, ones)
    forward = lambda x: (F.adaptive_avg_pool2d(x, max_side) if size > max_side else x).flatten(1)
    loader = make_loader(dataset, range(len(dataset)), 1024, workers)
    return extract_features(forward, loader, len(dataset), prepare, torch.device("cpu"), None)


def evaluate_features(model: DeepClusterNet, cfg: Config, dataset, device: torch.device, db=None) -> dict:
    """The run's closing evaluation on a labelled split: k-means with the true number of classes (the best of 10
    k-means++ starts, mean of ``cfg.eval_seeds`` seeds) on the fc features of the trained network and of the same
    network at its random initialisation, each L2-normalised and PCA-whitened + L2 (the training's
    pre-processing), and on the three simple pixel baselines: raw, L2-normalised, PCA-50 + L2. ``results`` lists
    one row per (features, pre-processing). ``knn`` gives, for the trained and random-init networks' fc features
    and last conv layer (average-pooled as for the linear probes) and for the pixels, the weighted kNN top-1
    (k = 20, cosine) of each image of ``dataset`` voted by the labelled images ``db`` (the training images; None:
    ``dataset`` itself, each image left out of its own vote). Under torchrun every process extracts its share of
    the fc features and rank 0 does the rest (the others get {})."""
    inputs, knn, last = [], [], f"conv{model.n_conv}"
    size, amp = model.image_size, amp_dtype(cfg.precision, device)
    fc = lambda net, ds, desc: centre_view_features(net, ds, device, cfg.batch_size, cfg.workers, amp,
                                                    desc=desc)
    for name, net in (("trained", model), ("random-init", make_model(cfg, dataset.channels, device))):
        f = fc(net, dataset, f"eval {name}")
        f_db = fc(net, db, f"eval {name} (kNN)") if db is not None else None
        if not dist.is_main():
            continue
        inputs += [(name, "L2", l2_normalize(f)),
                   (name, f"PCA-whitened {cfg.pca_dim} + L2", preprocess_features(f, cfg.pca_dim))]
        conv = [layer_features(net, ds, last, size, device, cfg.batch_size, cfg.workers) if ds is not None else None
                for ds in (dataset, db)]
        knn += [(name, "fc", f, f_db), (name, last, *conv)]
    if not dist.is_main():
        return {}
    pixels = pixel_features(dataset, size, cfg.workers)
    inputs += [("pixels", "raw", pixels), ("pixels", "L2", l2_normalize(pixels)),
               ("pixels", "PCA-50 + L2", l2_normalize(PCAWhitening(50, whiten=False).fit_transform(pixels)))]
    knn.append(("pixels", "raw", pixels, pixel_features(db, size, cfg.workers) if db is not None else None))
    results = [{"features": name, "preprocessing": prep,
                **kmeans_quality(x, dataset.targets, seeds=cfg.eval_seeds, seed=cfg.seed)}
               for name, prep, x in inputs]
    knn_rows = [{"features": name, "layer": layer, "top1": knn_accuracy(x, dataset.targets) if x_db is None else
                 knn_accuracy(x_db, db.targets, x, dataset.targets)} for name, layer, x, x_db in knn]
    return {"split": dataset.name, "images": len(dataset), "k": results[0]["k"], "seeds": cfg.eval_seeds,
            "restarts": results[0]["restarts"], "results": results,
            "knn": {"k": 20, "database": db.name if db is not None else "leave-one-out", "results": knn_rows}}
