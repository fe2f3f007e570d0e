"""The clustering protocol: k-means with the true number of classes on features, scored against the labels."""
from __future__ import annotations

import numpy as np

from ..clustering import KMeans
from .metrics import clustering_scores


def kmeans_quality(features: np.ndarray, labels: np.ndarray, seeds: int = 3, n_iter: int = 20,
                   seed: int = 0) -> dict:
    """k-means (k = number of distinct labels) on ``(N, D)`` features, ``seeds`` times from different seeds;
    returns the mean and standard deviation of NMI, ARI and Hungarian accuracy over those runs."""
    k = len(np.unique(labels))
    runs = [clustering_scores(labels, KMeans(k, n_iter, seed=seed + s).fit(features).labels_)
            for s in range(seeds)]
    out = {}
    for key in runs[0]:
        vals = np.array([r[key] for r in runs])
        out[key], out[key + "_std"] = float(vals.mean()), float(vals.std())
    out["k"], out["seeds"] = k, seeds
    return out
