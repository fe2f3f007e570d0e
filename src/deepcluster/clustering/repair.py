"""Empty-cluster repair, the paper's way (Sec. 3.3): give each empty cluster half of a non-empty one."""
from __future__ import annotations

import numpy as np


def repair_empty_clusters(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                          rng: np.random.Generator, eps: float = 1e-4):
    """For every empty cluster: pick a non-empty cluster of at least two points at random, place the empty
    cluster's centroid at that centroid plus a small random perturbation (and the donor's at minus it), and split
    the donor's points between the two by which perturbed centroid is nearer. If the split leaves one side
    empty (identical points), the donor's points are split in half along the perturbation instead. Both
    centroids are then moved to the means of their points.

    x: ``(N, d)``; labels: ``(N,)`` in ``[0, k)``; centroids: ``(k, d)``.
    Returns ``(labels, centroids, n_repaired)``, new arrays; no cluster is left empty when N >= k.
    """
    labels, centroids = labels.copy(), centroids.copy()
    k = len(centroids)
    counts = np.bincount(labels, minlength=k)
    n_repaired = 0
    for j in np.flatnonzero(counts == 0):
        donors = np.flatnonzero(counts >= 2)
        if len(donors) == 0:
            break  # fewer points than clusters: nothing left to split
        m = rng.choice(donors)
        members = np.flatnonzero(labels == m)
        r = rng.standard_normal(x.shape[1]).astype(np.float32)
        r *= eps * max(float(np.linalg.norm(centroids[m])), 1.0) / np.linalg.norm(r)
        # nearer to c + r than to c - r  <=>  (x - c) . r > 0
        proj = (x[members] - centroids[m]) @ r
        to_j = proj > 0
        if to_j.all() or not to_j.any():
            to_j = np.zeros(len(members), dtype=bool)
            to_j[np.argsort(proj, kind="stable")[len(members) // 2:]] = True
        labels[members[to_j]] = j
        centroids[j] = x[members[to_j]].mean(0)
        centroids[m] = x[members[~to_j]].mean(0)
        counts[j], counts[m] = to_j.sum(), (~to_j).sum()
        n_repaired += 1
    return labels, centroids, n_repaired
