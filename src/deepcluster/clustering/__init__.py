"""Clustering of pre-processed features: estimators with ``fit(x) -> self`` and ``labels_``."""
from .kmeans import KMeans, gpu_available, k_means
from .repair import repair_empty_clusters

__all__ = ["KMeans", "gpu_available", "k_means", "repair_empty_clusters"]
