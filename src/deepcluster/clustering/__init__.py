"""Clustering of pre-processed features: estimators with ``fit(x) -> self``, ``labels_`` (one integer per row)
and ``health_`` (figures for the training log). The training loop gets one from :func:`build_clustering` and
knows nothing else about it."""
from .kmeans import KMeans, gpu_available, k_means
from .pic import PIC
from .repair import repair_empty_clusters


def build_clustering(cfg, seed: int, use_gpu: bool | str = "auto"):
    """The clustering estimator a config asks for (``cfg.clustering``: "kmeans" or "pic")."""
    if cfg.clustering == "pic":
        return PIC(cfg.pic_neighbors, cfg.pic_sigma, cfg.pic_alpha, cfg.pic_iters, cfg.pic_singletons, use_gpu)
    return KMeans(cfg.k, cfg.kmeans_iters, seed=seed, use_gpu=use_gpu, n_init=cfg.kmeans_restarts,
                  init="random" if cfg.kmeans_restarts == 1 else "k-means++")


__all__ = ["KMeans", "PIC", "build_clustering", "gpu_available", "k_means", "repair_empty_clusters"]
