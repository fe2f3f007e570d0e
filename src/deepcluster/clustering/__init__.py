"""Clustering of pre-processed features: estimators with ``fit(x) -> self``, ``labels_`` (one integer per row)
and ``health_`` (a :class:`Health`, filled alike by each), run on ``device`` "auto", "cpu" or "cuda". The
training gets one from :func:`build_clustering` and knows nothing else about it."""
from typing import Optional

from ..settings import ClusteringSettings
from .health import Health
from .index import gpu_available
from .kmeans import KMeans, k_means
from .pic import PIC
from .repair import repair_empty_clusters


def build_clustering(cfg: ClusteringSettings, seed: int, device: str = "auto", k: Optional[int] = None):
    """The clustering estimator the clustering settings ask for (``cfg.clustering``: "kmeans" or "pic"); ``k``
    replaces ``cfg.k`` (an over-clustering head's)."""
    if cfg.clustering == "pic":
        return PIC(cfg.pic_neighbors, cfg.pic_sigma, cfg.pic_alpha, cfg.pic_iters, cfg.pic_singletons, device,
                   cfg.pic_graph, seed)
    return KMeans(k or cfg.k, cfg.kmeans_iters, seed=seed, device=device, n_init=cfg.kmeans_restarts,
                  init="random" if cfg.kmeans_restarts == 1 else "k-means++")


__all__ = ["Health", "KMeans", "PIC", "build_clustering", "gpu_available", "k_means", "repair_empty_clusters"]
