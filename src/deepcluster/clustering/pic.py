"""Power Iteration Clustering (Lin and Cohen, ICML 2010) in the variant DeepCluster offers next to k-means.

On the pre-processed features: a k-nearest-neighbour graph (faiss or PyTorch, exact; or faiss's approximate IVF
index above :data:`APPROXIMATE_ABOVE` points on a CPU), Gaussian edge weights exp(-d^2 / sigma^2),
symmetrised (W + W^T); power iterations v <- alpha W^T v + (1 - alpha) / N, L1-normalised each time; every node
points to the neighbour j that maximises W_ij (v_j - v_i) when that is positive (else to itself); the clusters are
the local maxima the pointers lead to. The number of clusters is an outcome, not an input. Defaults are the
reference implementation's (5 neighbours, sigma 0.2, alpha 0.001, 200 iterations).

Every step is vectorised: a sparse matrix product per iteration, one pass over the edges for the pointers, and
pointer jumping (p <- p[p]) to reach the maxima in log(depth) passes, so no Python loop runs over the N nodes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClusterMixin

from ..preprocess import check_rows
from .health import Health
from .index import check_device, faiss_module, flat_index
from .kmeans import _resolve_backend, all_finite

GRAPHS = ("auto", "exact", "ivf")
APPROXIMATE_ABOVE = 100_000  # points: the exact graph costs N^2 d (45 s at 100k on 2 cores, an hour at 1.28M)
RECALL_QUERIES = 1000  # points whose exact neighbours check an approximate graph
RECALL_TARGET = 0.95  # share of them an approximate graph must find, or the exact graph is searched instead


def _drop_self(d2: np.ndarray, idx: np.ndarray, k: int, rows: Optional[np.ndarray] = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of ``k + 1`` found for each searched point (``rows``: their indices; default 0..n-1),
    its own entry dropped (or its last one when the search missed it); with duplicate points the twin may come
    first, so look for the point itself."""
    n = len(idx)
    is_self = idx == (np.arange(n) if rows is None else rows)[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    return np.maximum(d2[keep].reshape(n, k), 0.0), idx[keep].reshape(n, k).astype(np.int64)


def _search_torch(x: np.ndarray, queries: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of ``queries`` among the rows of ``x`` with PyTorch on ``device``, by blocks of queries holding
    ~2^28 distances at a time (1 GiB), as the torch k-means assigns: ``(squared distances, indices)``."""
    import torch

    xt = torch.from_numpy(x).to(device)
    x_sq = (xt * xt).sum(1)
    rows = max(1, (1 << 28) // len(x))
    d2, idx = [], []
    for s in range(0, len(queries), rows):
        q = torch.from_numpy(queries[s:s + rows]).to(device)
        part = torch.addmm(x_sq, q, xt.T, alpha=-2)  # ||x||^2 - 2 q.x: ||q||^2 is the same along a row
        d, i = part.topk(k, dim=1, largest=False)
        d2.append((d + (q * q).sum(1, keepdim=True)).cpu().numpy())
        idx.append(i.cpu().numpy())
    return np.concatenate(d2), np.concatenate(idx)


def _ivf_index(x: np.ndarray, seed: int):
    """An approximate L2 index of the rows of ``x``: faiss IVF-Flat with about 4 sqrt(N) lists, trained on up to
    64 points a list drawn with ``seed``."""
    faiss = faiss_module()
    n, d = x.shape
    nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    train = x if n <= 64 * nlist else x[np.sort(np.random.default_rng(seed).choice(n, 64 * nlist, replace=False))]
    index.cp.seed = int(seed) % (2 ** 31)
    index.train(train)
    index.add(x)
    return index


def _true_neighbours(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact ``k`` nearest other rows of ``x`` for the rows ``queries`` (faiss, CPU)."""
    index = flat_index(x.shape[1], False)
    index.add(x)
    return _drop_self(*index.search(np.ascontiguousarray(x[queries]), k + 1), k, queries)[1]


def _recall(true: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(true, found)]) / true.shape[1])


def ivf_graph(x: np.ndarray, k: int, seed: int = 0, target: float = RECALL_TARGET):
    """The k-NN graph of ``x`` searched in an IVF index (:func:`_ivf_index`), each point visiting the fewest lists
    (16, 32, 64, ... up to an eighth of them) whose search finds at least ``target`` of the true neighbours of
    :data:`RECALL_QUERIES` points drawn with ``seed`` and searched exactly. Returns ``(d2, idx, recall, lists
    visited)``, or None when no such number of lists reaches the target (data without neighbourhood structure,
    where only the exact graph is right)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    index = _ivf_index(x, seed)
    q = np.sort(np.random.default_rng(seed).choice(n, min(n, RECALL_QUERIES), replace=False))
    true = _true_neighbours(x, q, k)
    nprobe = min(16, index.nlist)
    while nprobe <= max(16, index.nlist // 8):
        index.nprobe = nprobe
        _, found = _drop_self(*index.search(np.ascontiguousarray(x[q]), k + 1), k, q)
        recall = _recall(true, found)
        if recall >= target:
            return (*_drop_self(*index.search(x, k + 1), k), recall, nprobe)
        nprobe *= 2
    return None


def knn_graph(x: np.ndarray, n_neighbors: int, gpu: bool = False, device: str = "cpu"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of every row of ``x`` (L2), itself excluded: ``(distances^2 (N, k), indices (N, k))``, nearest
    first; on a faiss GPU index with ``gpu``, else with PyTorch on ``device`` when that is a CUDA device, else on
    faiss's CPU index."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    k = min(n_neighbors, n - 1)
    if not gpu and device.startswith("cuda"):
        return _drop_self(*_search_torch(x, x, k + 1, device), k)
    index = flat_index(x.shape[1], gpu)
    index.add(x)
    return _drop_self(*index.search(x, k + 1), k)


def graph_recall(x: np.ndarray, idx: np.ndarray, queries: int = RECALL_QUERIES, seed: int = 0) -> float:
    """Share of the true k nearest neighbours that the graph ``idx (N, k)`` holds, over ``queries`` rows drawn
    with ``seed`` and searched exactly (cost: queries x N distances)."""
    q = np.sort(np.random.default_rng(seed).choice(len(x), min(len(x), queries), replace=False))
    return _recall(_true_neighbours(np.ascontiguousarray(x, dtype=np.float32), q, idx.shape[1]), idx[q])


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
    if not len(order):  # no edge at all (every weight underflowed to 0: points far apart for sigma)
        return best
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


class PIC(ClusterMixin, BaseEstimator):
    """Power Iteration Clustering behind the same interface as :class:`KMeans`: ``fit(x)`` returns ``self`` with
    ``labels_`` (contiguous, 0..C-1), ``n_clusters_`` (C, found, not given), ``n_singletons_moved_``,
    ``sizes_``, ``stationary_`` (the vector v), ``graph_`` (how the k-NN graph was searched: "exact:faiss-cpu",
    "exact:faiss-gpu", "exact:torch:cuda:<i>" or "ivf:<lists visited>"), ``graph_recall_`` (for ivf: the share
    of the true neighbours it found, on :data:`RECALL_QUERIES` points searched exactly; else None) and
    ``health_`` (:class:`~deepcluster.clustering.health.Health`).

    ``device``: "auto" searches the graph on a GPU when there is one (faiss's GPU index when faiss has one, else
    PyTorch on the current CUDA device, as k-means does), "cpu" on the CPU, "cuda" on a GPU (a ValueError when
    none is visible). ``graph``: "exact", "ivf" (approximate, on the CPU, :func:`ivf_graph`: the exact graph
    after all when it cannot find :data:`RECALL_TARGET` of the neighbours), or "auto": exact on a GPU and up
    to :data:`APPROXIMATE_ABOVE` points, ivf above on a CPU. ``seed`` draws the ivf index's training sample and the
    recall check's queries."""

    def __init__(self, n_neighbors: int = 5, sigma: float = 0.2, alpha: float = 0.001, n_iter: int = 200,
                 move_singletons: bool = True, device: str = "auto", graph: str = "auto", seed: int = 0):
        self.n_neighbors, self.sigma, self.alpha, self.n_iter = n_neighbors, sigma, alpha, n_iter
        self.move_singletons, self.device, self.graph, self.seed = move_singletons, device, graph, seed

    def _search_plan(self, n: int) -> tuple[str, bool, str]:
        """``(graph, faiss on a GPU, torch device)`` of a fit on ``n`` points: the GPU k-means would take (faiss's
        index when faiss has one, else PyTorch on the current CUDA device), or the CPU."""
        check_device(self.device)
        if self.graph not in GRAPHS:
            raise ValueError(f"unknown PIC graph {self.graph!r}: choose one of {', '.join(GRAPHS)}")
        backend, where = _resolve_backend("auto", self.device)
        gpu = backend == "faiss" and where == "cuda"
        where = where if backend == "torch" else "cpu"
        graph = self.graph
        if graph == "auto":
            graph = "exact" if gpu or where != "cpu" or n <= APPROXIMATE_ABOVE else "ivf"
        return graph, gpu, where

    def fit(self, x: np.ndarray, y=None) -> "PIC":
        """Cluster the rows of ``x (N, d)``; ``y`` is ignored."""
        x = check_rows(x, "PIC")
        if len(x) < 2:
            raise ValueError(f"PIC needs at least 2 points; got {len(x)}")
        if not all_finite(x):
            raise ValueError("PIC input holds NaN or infinite values")
        graph, gpu, where = self._search_plan(len(x))
        found = ivf_graph(x, min(self.n_neighbors, len(x) - 1), self.seed) if graph == "ivf" else None
        if found is not None:
            d2, idx, self.graph_recall_, lists = found
            self.graph_ = f"ivf:{lists}"
        else:  # exact, asked for or because the approximate graph missed the recall target
            d2, idx = knn_graph(x, self.n_neighbors, gpu, where)
            self.graph_recall_ = None
            self.graph_ = "exact:faiss-gpu" if gpu else f"exact:torch:{where}" if where != "cpu" else "exact:faiss-cpu"
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
        self.health_ = Health.of(self.labels_, moved, graph_recall=self.graph_recall_)
        self.n_features_in_ = x.shape[1]
        return self
