"""k-means as a scikit-learn-shaped estimator over faiss (CPU, or GPU when present)."""
from __future__ import annotations

import numpy as np

from .repair import repair_empty_clusters


def _faiss():
    import faiss  # imported lazily: importing faiss costs start-up time for commands that never cluster
    return faiss


def _flat_index(d: int, use_gpu: bool):
    faiss = _faiss()
    if use_gpu:
        import torch

        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return faiss.GpuIndexFlatL2(res, d, cfg)
    return faiss.IndexFlatL2(d)


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


INITS = {"random": "ClusteringInitMethod_RANDOM", "k-means++": "ClusteringInitMethod_KMEANS_PLUS_PLUS"}


class KMeans:
    """Lloyd's k-means with faiss: ``n_iter`` iterations from ``seed``, no subsampling, empty clusters re-split
    by splitting a non-empty one (faiss does it during the iterations; :func:`repair_empty_clusters` after the
    final assignment).

    ``init``: "random" (k points drawn at random, the paper's choice) or "k-means++"; ``n_init``: restarts, the
    one with the lowest objective is kept.

    Learned attributes: ``labels_ (N,)``, ``cluster_centers_ (k, d)``, ``inertia_`` (sum of squared distances to
    the assigned centroid), ``n_iter_``, ``n_resplit_`` (empty clusters re-split in all), ``objective_`` (per
    iteration), ``health_`` (the figures the training logs: objective per point, clusters re-split).
    """

    def __init__(self, n_clusters: int, n_iter: int = 20, seed: int = 0, init: str = "random", n_init: int = 1,
                 use_gpu: bool | str = "auto", verbose: bool = False):
        if init not in INITS:
            raise ValueError(f"unknown k-means init '{init}': choose one of {', '.join(INITS)}")
        self.n_clusters, self.n_iter, self.seed, self.init, self.n_init = n_clusters, n_iter, seed, init, n_init
        self.use_gpu, self.verbose = use_gpu, verbose

    def fit(self, x: np.ndarray) -> "KMeans":
        faiss = _faiss()
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        if self.n_clusters < 2 or self.n_clusters > n:
            raise ValueError(f"k-means needs 2 <= k <= N; got k = {self.n_clusters} for N = {n} points")
        if not np.isfinite(x).all():
            raise ValueError("k-means input holds NaN or infinite values")
        use_gpu = gpu_available() if self.use_gpu == "auto" else bool(self.use_gpu)
        clus = faiss.Clustering(d, self.n_clusters)
        clus.niter, clus.seed, clus.verbose = self.n_iter, int(self.seed) % (2 ** 31), self.verbose
        clus.nredo = self.n_init
        clus.init_method = getattr(faiss, INITS[self.init])
        clus.max_points_per_centroid = 10_000_000  # the paper: cluster every point, no subsampling
        clus.min_points_per_centroid = 1  # small k/N ratios are intended here; no warning
        index = _flat_index(d, use_gpu)
        clus.train(x, index)
        centroids = faiss.vector_to_array(clus.centroids).reshape(self.n_clusters, d)
        stats = clus.iteration_stats
        stats = [stats.at(i) for i in range(stats.size())]
        self.objective_ = np.array([s.obj for s in stats])
        self.n_iter_ = len(stats)
        _, idx = index.search(x, 1)
        labels, centroids, n_after = repair_empty_clusters(
            x, idx[:, 0].astype(np.int64), centroids, np.random.default_rng(self.seed))
        self.labels_, self.cluster_centers_ = labels, centroids
        self.n_resplit_ = int(sum(s.nsplit for s in stats)) + n_after
        self.inertia_ = float(((x - centroids[labels]) ** 2).sum())
        self.health_ = {"kmeans_objective": self.inertia_ / n, "empty_resplit": self.n_resplit_}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest learned centroid for each row of ``(N, d)``."""
        index = _flat_index(self.cluster_centers_.shape[1], False)
        index.add(np.ascontiguousarray(self.cluster_centers_, dtype=np.float32))
        return index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0].astype(np.int64)

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).labels_


def k_means(x: np.ndarray, n_clusters: int, **kwargs):
    """Function twin of :class:`KMeans`: returns ``(cluster_centers, labels, inertia)``."""
    km = KMeans(n_clusters, **kwargs).fit(x)
    return km.cluster_centers_, km.labels_, km.inertia_
