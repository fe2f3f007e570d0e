"""The run's clustering: fitted once more on the trained network after the last epoch, and applied to any images.

Each epoch clusters the features of the network as it was *before* that epoch's training pass, so the network a
run leaves is one pass further than its last clustering. After the last epoch the trained network's features of
every training image are therefore clustered once more, the way training does (v1: the fc features PCA-whitened
and L2-normalised, one k-means per head; v2: the prototype head's projections), and the whitening, the centroids
and each image's nearest centroid are saved with the run (:class:`~deepcluster.state.RunClustering`).

Any image is placed by :func:`embed` (the same features, projected batch by batch exactly as here) and
:func:`nearest`, so the training images placed again get their clusters back exactly (CPU, one process, the
run's batch size).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed as dist
from .clustering import build_clustering
from .config import Config
from .device import kept_dtype, precision_name
from .features import centre_view_features, fit_whitening, whitening_sample
from .preprocess import PCAWhitening, l2_normalize
from .state import RunClustering


def projector(model, clustering: RunClustering, device: torch.device):
    """The map from the network's fc features ``(B, D)`` to the clustering space, on ``device``."""
    if clustering.space == "projection":
        return lambda f: model.head.project(F.relu(f))
    mean = torch.from_numpy(clustering.mean.astype(np.float32)).to(device)
    proj = torch.from_numpy(clustering.projection.astype(np.float32)).to(device)
    return lambda f: F.normalize((f - mean) @ proj, dim=1)


def whitened(fc: np.ndarray, clustering: RunClustering) -> np.ndarray:
    """The fc features ``(N, D)`` in a "whitened" clustering's space, in numpy: minus its mean, times its
    projection, L2-normalised (:func:`projector` on the CPU)."""
    return l2_normalize((np.asarray(fc, np.float32) - clustering.mean.astype(np.float32))
                        @ clustering.projection.astype(np.float32))


def embed(model, dataset, clustering: RunClustering, device: torch.device, batch_size: int = 256,
          workers: Optional[int] = 0, amp: Optional[torch.dtype] = None, indices: Optional[np.ndarray] = None,
          out: Optional[np.ndarray] = None, desc: Optional[str] = None, alone: bool = False) -> Optional[np.ndarray]:
    """The images ``indices`` (default: all) in the clustering space, ``(M, d)`` float32 in their order (written
    into ``out`` when given), from the centre view of each."""
    return centre_view_features(model, dataset, device, batch_size, workers, amp, indices,
                                projector(model, clustering, device), out, desc, alone)


def _squared_distances(x: np.ndarray, centroids: np.ndarray, chunk: int):
    """``(start, d2)`` for each chunk of rows: squared Euclidean distances to every centroid, in float64."""
    c = centroids.astype(np.float64)
    c_sq = (c * c).sum(1)
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk].astype(np.float64)
        yield s, (xs * xs).sum(1)[:, None] - 2 * xs @ c.T + c_sq[None]


def nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid and its Euclidean distance, ``(labels int64 (N,), distances float32 (N,))``,
    computed in float64 so that the answer for a row does not depend on the rows beside it."""
    labels, dist = np.empty(len(x), np.int64), np.empty(len(x), np.float32)
    for s, d2 in _squared_distances(x, centroids, chunk):
        best = d2.argmin(1)
        labels[s:s + len(d2)], dist[s:s + len(d2)] = best, np.sqrt(np.maximum(d2[np.arange(len(d2)), best], 0))
    return labels, dist


def nearest_clusters(x: np.ndarray, centroids: np.ndarray, top: int, chunk: int = 4096) -> np.ndarray:
    """Each row's ``top`` nearest centroids, nearest first, ``int64 (N, top)`` (the first column is
    :func:`nearest`'s)."""
    top = min(top, len(centroids))
    out = np.empty((len(x), top), np.int64)
    for s, d2 in _squared_distances(x, centroids, chunk):
        out[s:s + len(d2)] = np.argsort(d2, axis=1, kind="stable")[:, :top]
    return out


def _project(fc: np.ndarray, project, device: torch.device, batch_size: int) -> np.ndarray:
    """``project`` applied to the rows of ``fc`` on ``device`` in the batches :func:`embed` projects them in (the
    same inputs to the same kernels: the same rows, bit for bit)."""
    return np.concatenate([project(torch.from_numpy(fc[s:s + batch_size]).to(device)).cpu().numpy()
                           for s in range(0, len(fc), batch_size)])


def fit_run_clustering(model, dataset, cfg: Config, device: torch.device, seed: int,
                       desc: Optional[str] = "final clustering", fc: Optional[np.ndarray] = None
                       ) -> tuple[Optional[RunClustering], Optional[np.ndarray]]:
    """Cluster ``dataset`` with the trained ``model`` as ``cfg``'s training does (every head's k; PIC's clusters
    get their means as centroids), seeded with ``seed``. Returns ``(clustering, features)``: the features
    ``(N, d)`` float32 are every image in the clustering space, what was clustered (the run keeps them, so that
    other numbers of groups can be drawn from them later). Under torchrun every process extracts its share; rank
    0 returns the result, the others ``(None, None)``. ``fc``: the trained network's fc features of every image
    (one process), when the caller has them: then no image is read again."""
    amp = kept_dtype(cfg, device)
    rng = np.random.default_rng([cfg.seed, cfg.epochs + 1, 1])
    if cfg.method == "v2":
        space = RunClustering("projection", [], [], [])
    elif fc is not None:
        pca = PCAWhitening(cfg.pca_dim).fit(fc[whitening_sample(len(fc), cfg.pca_sample, rng)])
        space = RunClustering("whitened", [], [], [], pca.mean_.astype(np.float32), pca.projection_)
    else:  # the PCA-whitening, fitted as the training fits it: on a sample of at most pca_sample images
        pca, _, _ = fit_whitening(model, dataset, device, rng, cfg.pca_dim, cfg.pca_sample, cfg.batch_size,
                                  cfg.workers, amp, desc)
        space = RunClustering("whitened", [], [], [], pca.mean_.astype(np.float32), pca.projection_)
    if fc is not None:
        model.eval()
        with torch.inference_mode():
            x = _project(fc, projector(model, space, device), device, cfg.batch_size)
    else:
        x = embed(model, dataset, space, device, cfg.batch_size, cfg.workers, amp, desc=desc)
    if not dist.is_main():
        return None, None
    where = "auto" if device.type == "cuda" else "cpu"
    for i, k in enumerate([cfg.k] + cfg.overcluster_ks):
        est = build_clustering(cfg, seed + i, where, k).fit(x)
        centroids = getattr(est, "cluster_centers_", None)
        if centroids is None:  # PIC: the mean of each cluster
            centroids = np.stack([x[est.labels_ == j].mean(0) for j in range(est.n_clusters_)])
        labels, distances = nearest(x, centroids)
        space.centroids.append(np.asarray(centroids, np.float32))
        space.labels.append(labels)
        space.distances.append(distances)
    space.precision = precision_name(amp)  # ``fc`` too was extracted in it (closing_features)
    return space, x
