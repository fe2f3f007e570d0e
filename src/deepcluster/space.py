"""The clustering stage, written once: the network's features -> the clustering space -> clusters. Every epoch, the
run's final clustering and the placing of images (the exports, ``assign``, the estimator) go through it.

The clustering space (:class:`Space`) is fitted, saved with the run, and applied by extraction on the fly:

- ``"whitened"`` (v1, the paper): the fc features minus their mean, times a PCA-whitening fitted on at most
  ``pca_sample`` images, L2-normalised (:func:`~deepcluster.preprocess.whiten`);
- ``"projection"`` (v2): the prototype head's unit-norm projections of the fc features.

:func:`clustering_input` fits the space and reads every image into it once, so the stage holds ``N x d`` floats,
never ``N x D``; :func:`fit_clusters` fits one clustering per head on it; :func:`final_clustering` keeps the trained
network's clustering as the run's (:class:`~deepcluster.state.RunClustering`); :func:`embed` and :func:`nearest`
place any image in it, and the training images placed again get their clusters back exactly (CPU, one process,
the run's batch size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed as dist
from .clustering import build_clustering
from .device import precision_name
from .features import Forward, Reading, centre_view_embedding, centre_view_features
from .preprocess import PCAWhitening, whiten
from .settings import ClusteringSettings
from .state import RunClustering


@dataclass
class Space:
    """A fitted clustering space: ``kind`` "whitened" with its ``mean (D,)`` and ``projection (D, d)``, or
    "projection" (the model's own head)."""
    kind: str
    mean: Optional[np.ndarray] = None
    projection: Optional[np.ndarray] = None

    @classmethod
    def whitening(cls, pca: PCAWhitening) -> "Space":
        return cls("whitened", pca.mean_.astype(np.float32), pca.projection_)

    @classmethod
    def of(cls, clustering: RunClustering) -> "Space":
        """The space a run's clustering was fitted in."""
        return cls(clustering.space, clustering.mean, clustering.projection)

    def on(self, model, device: torch.device) -> Forward:
        """The map from ``model``'s fc features ``(B, D)`` to the space, on ``device``: what extraction applies."""
        if self.kind == "projection":
            return lambda f: model.head.project(F.relu(f))
        mean, proj = (torch.from_numpy(a.astype(np.float32)).to(device) for a in (self.mean, self.projection))
        return lambda f: whiten(f, mean, proj)

    def rows(self, fc: np.ndarray) -> np.ndarray:
        """fc features in memory ``(N, D)`` in a "whitened" space, in numpy."""
        return whiten(np.asarray(fc, np.float32), self.mean.astype(np.float32), self.projection.astype(np.float32))


@dataclass(frozen=True)
class Fitting:
    """How the space is fitted: its ``kind``; for "whitened", ``pca_dim`` components fitted on at most
    ``pca_sample`` images drawn with ``rng``."""
    kind: str
    rng: Optional[np.random.Generator] = None
    pca_dim: int = 256
    pca_sample: int = 65536


def whitening_sample(n: int, pca_sample: int, rng: np.random.Generator) -> np.ndarray:
    """The sorted indices of the images the PCA is fitted on: all ``n`` when ``pca_sample`` covers them, else
    ``pca_sample`` drawn with ``rng``."""
    return np.arange(n) if n <= pca_sample else np.sort(rng.choice(n, pca_sample, replace=False))


def embed(model, dataset, space: Space | RunClustering, device: torch.device, reading: Reading = Reading(),
          indices: Optional[np.ndarray] = None, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The images ``indices`` (default: all) in the clustering space (a run's clustering: the space it was fitted
    in), ``(M, d)`` float32 in their order (written into ``out`` when given), from the centre view of each."""
    space = Space.of(space) if isinstance(space, RunClustering) else space
    return centre_view_features(model, dataset, device, reading, indices, space.on(model, device), out)


def _through(project: Forward, rows: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    """``project`` applied to ``rows`` in memory on ``device``, in the batches extraction reads them in (the same
    inputs to the same kernels as :func:`embed`: the same rows, bit for bit)."""
    with torch.inference_mode():
        return np.concatenate([project(torch.from_numpy(rows[s:s + batch_size]).to(device)).cpu().numpy()
                               for s in range(0, len(rows), batch_size)])


def clustering_input(model, dataset, device: torch.device, reading: Reading, fitting: Fitting,
                     features: Optional[np.ndarray] = None, exact: bool = False
                     ) -> tuple[Space, Optional[np.ndarray]]:
    """Fit the clustering space and read every image into it: ``(space (every rank), x (N, d) float32 on rank 0,
    None on the others)``.

    "whitened": the PCA is fitted on the images :func:`whitening_sample` draws (all of them when N is not larger
    than ``pca_sample``, which is then exactly the paper's pre-processing); the other images are projected on the
    device as they are read. So the largest arrays are ``pca_sample x D`` while fitting (freed before the rest is
    read) and ``N x d``, where keeping all ``N x D`` would cost 21 GB on ImageNet with AlexNet. ``features``: the
    fc features of every image when the caller has them (one process, N <= ``pca_sample``): no image is read.
    Rows in memory (the sample's, or ``features``) go through the space in numpy, or, ``exact``, on the device as
    :func:`embed` would (so that a clustering kept with the run places its own images back exactly)."""
    model.eval()
    if fitting.kind == "projection":
        space = Space("projection")
        if features is not None:
            return space, _through(space.on(model, device), features, device, reading.batch_size)
        return space, embed(model, dataset, space, device, reading)
    n = len(dataset)
    fit = whitening_sample(n, fitting.pca_sample, fitting.rng)
    if features is None:  # two passes (the sample, then the rest): an int8 network is quantised once for both
        embedding = centre_view_embedding(model, dataset, reading.amp) \
            if reading.amp is torch.qint8 and len(fit) < n else None
        f = centre_view_features(model, dataset, device, reading, fit, embedding=embedding)
    else:
        f, embedding = features if len(fit) == n else features[fit], None
    space = dist.on_main(lambda: Space.whitening(PCAWhitening(fitting.pca_dim).fit(f)))
    if not dist.is_main():
        x = None
    elif exact:
        x = _through(space.on(model, device), f, device, reading.batch_size)
    else:
        x = space.rows(f)
    f = None  # the sample's raw features are done with: freed before the other images are read
    if len(fit) == n:
        return space, x
    out = None
    if dist.is_main():
        out = np.empty((n, x.shape[1]), dtype=np.float32)
        out[fit] = x
    rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
    return space, centre_view_features(model, dataset, device, reading, rest, space.on(model, device), out,
                                       embedding)


def fit_clusters(x: np.ndarray, cfg: ClusteringSettings, seed: int, device: torch.device, ks: list) -> list:
    """One fitted clustering of ``x`` per head, ``ks`` their numbers of clusters (None: ``cfg.k``; PIC chooses its
    own), the ``i``-th seeded ``seed + i``; on the GPU when ``device`` is one."""
    where = "auto" if device.type == "cuda" else "cpu"
    return [build_clustering(cfg, seed + i, where, k).fit(x) for i, k in enumerate(ks)]


def final_clustering(model, dataset, device: torch.device, reading: Reading, fitting: Fitting,
                     clus: ClusteringSettings, seed: int, features: Optional[np.ndarray] = None
                     ) -> tuple[Optional[RunClustering], Optional[np.ndarray]]:
    """Cluster ``dataset`` with the trained ``model`` as the training does (the space fitted as ``fitting`` says,
    read as ``reading`` says, every head's k; PIC's clusters get their means as centroids), seeded with ``seed``.
    Returns ``(clustering, x)``: ``x`` ``(N, d)`` float32 is every image in the clustering space, what was
    clustered (the run keeps it, so that other numbers of groups can be drawn from it later). Under torchrun every
    process reads its share; rank 0 returns the result, the others ``(None, None)``. ``features``: the trained
    network's fc features of every image (one process), when the caller has them: then no image is read again."""
    space, x = clustering_input(model, dataset, device, reading, fitting, features, exact=True)
    if not dist.is_main():
        return None, None
    kept = RunClustering(space.kind, [], [], [], space.mean, space.projection, precision_name(reading.amp))
    for est in fit_clusters(x, clus, seed, device, [clus.k] + clus.overcluster_ks):
        centroids = getattr(est, "cluster_centers_", None)
        if centroids is None:  # PIC: the mean of each cluster
            centroids = np.stack([x[est.labels_ == j].mean(0) for j in range(est.n_clusters_)])
        labels, distances = nearest(x, centroids)
        kept.centroids.append(np.asarray(centroids, np.float32))
        kept.labels.append(labels)
        kept.distances.append(distances)
    return kept, x


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
    labels, dist_ = np.empty(len(x), np.int64), np.empty(len(x), np.float32)
    for s, d2 in _squared_distances(x, centroids, chunk):
        best = d2.argmin(1)
        labels[s:s + len(d2)], dist_[s:s + len(d2)] = best, np.sqrt(np.maximum(d2[np.arange(len(d2)), best], 0))
    return labels, dist_


def nearest_clusters(x: np.ndarray, centroids: np.ndarray, top: int, chunk: int = 4096) -> np.ndarray:
    """Each row's ``top`` nearest centroids, nearest first, ``int64 (N, top)`` (the first column is
    :func:`nearest`'s)."""
    top = min(top, len(centroids))
    out = np.empty((len(x), top), np.int64)
    for s, d2 in _squared_distances(x, centroids, chunk):
        # the top few of k: a partition (linear in k), then those few in order, ties to the lower index as argmin's
        near = np.argpartition(d2, top - 1, axis=1)[:, :top] if top < d2.shape[1] else \
            np.broadcast_to(np.arange(top), d2.shape).copy()
        order = np.lexsort((near, np.take_along_axis(d2, near, 1)))
        out[s:s + len(d2)] = np.take_along_axis(near, order, 1)
    return out


__all__ = ["Fitting", "Space", "clustering_input", "embed", "final_clustering", "fit_clusters", "nearest",
           "nearest_clusters", "whitening_sample"]
