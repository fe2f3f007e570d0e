"""Pseudo-labels from a cluster assignment, and the epoch's sample list drawn uniformly over clusters."""
from __future__ import annotations

import numpy as np


def pseudo_labels(assignment: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber cluster ids to ``0..C-1`` in order, dropping empty clusters. Returns ``(labels (N,), C)``."""
    ids, labels = np.unique(assignment, return_inverse=True)
    return labels.astype(np.int64), len(ids)


def uniform_over_clusters(labels: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Dataset indices ``(n_samples,)``: an equal share from every non-empty cluster (drawn with replacement only
    when a cluster is smaller than its share), shuffled. The paper's Sec. 3.3: without it the network learns to
    predict only the large clusters.

    The returned values are *dataset indices*, so the images loaded are the ones drawn for each cluster.
    """
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    c = len(ids)
    shares = np.full(c, n_samples // c)
    shares[rng.choice(c, n_samples - shares.sum(), replace=False)] += 1  # the remainder: one more for a few
    parts = [rng.choice(order[s:s + n], m, replace=bool(n < m)) for s, n, m in zip(starts, counts, shares)]
    out = np.concatenate(parts).astype(np.int64)
    rng.shuffle(out)
    return out
