"""Power Iteration Clustering (Lin and Cohen, ICML 2010) in the variant DeepCluster offers next to k-means.

On the pre-processed features: a k-nearest-neighbour graph (faiss), Gaussian edge weights exp(-d^2 / sigma^2),
symmetrised (W + W^T); power iterations v <- alpha W^T v + (1 - alpha) / N, L1-normalised each time; every node
points to the neighbour j that maximises W_ij (v_j - v_i) when that is positive (else to itself); the clusters are
the local maxima the pointers lead to. The number of clusters is an outcome, not an input. Defaults are the
reference implementation's (5 neighbours, sigma 0.2, alpha 0.001, 200 iterations).

Every step is vectorised: a sparse matrix product per iteration, one pass over the edges for the pointers, and
pointer jumping (p <- p[p]) to reach the maxima in log(depth) passes, so no Python loop runs over the N nodes.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .health import Health
from .index import check_device, flat_index, gpu_available
from .kmeans import all_finite


def knn_graph(x: np.ndarray, n_neighbors: int, gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of every row of ``x`` (faiss, L2), itself excluded: ``(distances^2 (N, k), indices (N, k))``,
    nearest first."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    k = min(n_neighbors, n - 1)
    index = flat_index(x.shape[1], gpu)
    index.add(x)
    d2, idx = index.search(x, k + 1)
    # Drop each row's own entry; with duplicate points faiss may list the twin first, so look for i itself.
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    return np.maximum(d2[keep].reshape(n, k), 0.0), idx[keep].reshape(n, k).astype(np.int64)


def affinity_matrix(d2: np.ndarray, idx: np.ndarray, sigma: float) -> sp.csr_matrix:
    """Sparse ``W + W^T`` with ``W_ij = exp(-d2_ij / sigma^2)`` on the k-NN edges ``i -> idx[i, :]``."""
    n, k = idx.shape
    w = sp.csr_matrix((np.exp(-d2 / sigma ** 2).ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    return (w + w.T).tocsr()


def power_iterations(w: sp.csr_matrix, alpha: float, n_iter: int) -> np.ndarray:
    """``v <- alpha W^T v + (1 - alpha) / N``, L1-normalised, ``n_iter`` times from the uniform vector (``w`` is
    symmetric, so ``W^T v`` is ``W v``)."""
    n = w.shape[0]
    v = np.full(n, 1.0 / n)
    for _ in range(n_iter):
        v = alpha * (w @ v) + (1.0 - alpha) / n
        v /= v.sum()
    return v


def _row_argmax(w: sp.csr_matrix, score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """For each row of ``w``, the column of its stored entry with the highest ``score`` among ``valid`` ones
    (entries in CSR order), or -1 when the row has none."""
    n = w.shape[0]
    rows = np.repeat(np.arange(n), np.diff(w.indptr))
    score = np.where(valid, score, -np.inf)
    order = np.lexsort((-score, rows))  # by row, best score first
    first = np.searchsorted(rows[order], np.arange(n))
    best = np.full(n, -1, dtype=np.int64)
    has = (first < len(order)) & (rows[order[np.minimum(first, len(order) - 1)]] == np.arange(n))
    pick = order[first[has]]
    ok = valid[pick]
    best[np.flatnonzero(has)[ok]] = w.indices[pick[ok]]
    return best


def follow_pointers(w: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
    """Each node's pointer goes to the neighbour j maximising ``W_ij (v_j - v_i)`` when positive, else to itself;
    returns the node every chain ends at (a local maximum of v). Pointers strictly increase v, so the chains have
    no cycles; pointer jumping reaches their ends in log(longest chain) passes."""
    n = w.shape[0]
    rows = np.repeat(np.arange(n), np.diff(w.indptr))
    gain = w.data * (v[w.indices] - v[rows])
    target = _row_argmax(w, gain, gain > 0)
    p = np.where(target >= 0, target, np.arange(n))
    while True:
        nxt = p[p]
        if np.array_equal(nxt, p):
            return p
        p = nxt


def move_singletons(w: sp.csr_matrix, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Move every node alone in its cluster to the cluster of its nearest neighbour (largest edge weight) that is
    not alone, repeating while a move makes another singleton's neighbour non-alone. Returns
    ``(labels, moved)``; afterwards no singleton has a neighbour in a cluster of two or more."""
    labels = labels.copy()
    moved = 0
    n = w.shape[0]
    rows = np.repeat(np.arange(n), np.diff(w.indptr))
    while True:
        sizes = np.bincount(labels)
        alone = sizes[labels] == 1
        candidate = alone[rows] & ~alone[w.indices]
        if not candidate.any():
            return labels, moved
        target = _row_argmax(w, w.data, candidate)
        go = np.flatnonzero(target >= 0)
        labels[go] = labels[target[go]]
        moved += len(go)


class PIC:
    """Power Iteration Clustering behind the same interface as :class:`KMeans`: ``fit(x)`` returns ``self`` with
    ``labels_`` (contiguous, 0..C-1), ``n_clusters_`` (C, found, not given), ``n_singletons_moved_``,
    ``sizes_``, ``stationary_`` (the vector v) and ``health_`` (:class:`~deepcluster.clustering.health.Health`).

    ``device``: "auto" runs the k-NN search on a faiss GPU index when faiss has one, "cpu" on the CPU, "cuda" on
    the GPU (a ValueError when faiss has none)."""

    def __init__(self, n_neighbors: int = 5, sigma: float = 0.2, alpha: float = 0.001, n_iter: int = 200,
                 move_singletons: bool = True, device: str = "auto"):
        self.n_neighbors, self.sigma, self.alpha, self.n_iter = n_neighbors, sigma, alpha, n_iter
        self.move_singletons, self.device = move_singletons, device

    def fit(self, x: np.ndarray) -> "PIC":
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) < 2:
            raise ValueError(f"PIC needs at least 2 points; got {len(x)}")
        if not all_finite(x):
            raise ValueError("PIC input holds NaN or infinite values")
        check_device(self.device)
        gpu = self.device != "cpu" and gpu_available()
        if self.device == "cuda" and not gpu:
            raise ValueError("device='cuda' but this faiss cannot search on a GPU (faiss-cpu, or no GPU): pass "
                             "device='auto' or 'cpu'")
        d2, idx = knn_graph(x, self.n_neighbors, gpu)
        w = affinity_matrix(d2, idx, self.sigma)
        v = power_iterations(w, self.alpha, self.n_iter)
        _, labels = np.unique(follow_pointers(w, v), return_inverse=True)
        moved = 0
        if self.move_singletons:
            labels, moved = move_singletons(w, labels)
            _, labels = np.unique(labels, return_inverse=True)
        self.labels_ = labels.astype(np.int64)
        self.sizes_ = np.bincount(self.labels_)
        self.n_clusters_ = len(self.sizes_)
        self.n_singletons_moved_ = moved
        self.stationary_ = v
        self.health_ = Health.of(self.labels_, moved)
        return self

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).labels_
