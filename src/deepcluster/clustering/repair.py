"""Empty clusters mended by splitting a non-empty one: the paper's way (Sec. 3.3) after the final assignment
(:func:`repair_empty_clusters`), and faiss's way between the iterations of our PyTorch k-means
(:func:`split_empty`)."""
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


SPLIT_EPS = 1 / 1024  # relative perturbation that separates the two copies of a split centroid (faiss's value)


def split_empty(centroids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> int:
    """Give every empty cluster half of a big one, the way faiss does between its k-means iterations (the idea of
    ``split_clusters`` in faiss's Clustering.cpp): the donor is drawn with probability proportional to (size - 1),
    so singletons never give; its centroid is copied and the two copies are pushed apart by a symmetric relative
    perturbation of 1/1024 (one copy scaled by 1 + eps on even coordinates and 1 - eps on odd ones, the other the
    reverse); the donor's count is halved between the two, as if the next assignment split it evenly.

    centroids: ``(k, d)`` float32, counts: ``(k,)`` float64; both are updated in place. Returns the number of splits.
    """
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, SPLIT_EPS, -SPLIT_EPS)
    n_split = 0
    for j in np.flatnonzero(counts == 0):
        weight = np.maximum(counts - 1, 0)
        if weight.sum() <= 0:
            break  # no cluster holds two points: nothing to split (cannot happen with N >= k)
        m = rng.choice(len(counts), p=weight / weight.sum())
        c = centroids[m].copy()
        centroids[j], centroids[m] = c * (1 + sign), c * (1 - sign)
        counts[j] = counts[m] / 2
        counts[m] -= counts[j]
        n_split += 1
    return n_split
