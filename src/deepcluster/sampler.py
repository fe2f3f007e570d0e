"""Pseudo-labels from a cluster assignment, and the epoch's sample list drawn uniformly over clusters."""
from __future__ import annotations

import numpy as np


def pseudo_labels(assignment: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber non-negative cluster ids to ``0..C-1`` in order, dropping empty clusters. Returns
    ``(labels (N,), C)``."""
    assignment = np.asarray(assignment, dtype=np.int64)
    # a lookup table over the ids (they are small integers) instead of np.unique's sort: O(N)
    present = np.bincount(assignment) > 0
    new_id = np.cumsum(present) - 1
    return new_id[assignment], int(present.sum())


def uniform_over_clusters(labels: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Dataset indices ``(n_samples,)``: an equal share from every non-empty cluster (drawn with replacement only
    when a cluster is smaller than its share), shuffled. The paper's Sec. 3.3: without it the network learns to
    predict only the large clusters.

    The returned values are *dataset indices*, so the images loaded are the ones drawn for each cluster.
    """
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    c = len(counts)
    shares = np.full(c, n_samples // c)
    shares[rng.choice(c, n_samples - shares.sum(), replace=False)] += 1  # the remainder: one more for a few
    # Vectorised, no loop over clusters (10,000 of them on ImageNet): the images grouped by cluster, in random
    # order within each; a cluster at least as large as its share gives its first `share` images (drawn
    # without replacement), a smaller one `share` draws with replacement.
    order = np.lexsort((rng.random(len(labels)), labels))
    starts = np.cumsum(counts) - counts
    cluster = np.repeat(np.arange(c), shares)
    rank = np.arange(len(cluster)) - np.repeat(np.cumsum(shares) - shares, shares)  # 0 .. share-1 per cluster
    small = counts[cluster] < shares[cluster]
    pos = np.where(small, (rng.random(len(cluster)) * counts[cluster]).astype(np.int64), rank)
    out = order[starts[cluster] + pos].astype(np.int64)
    rng.shuffle(out)
    return out
