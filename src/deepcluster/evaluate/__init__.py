"""Evaluation as a library: functions from features or labellings to dicts of metrics."""
from .clustering import kmeans_quality
from .metrics import ari, clustering_scores, hungarian_accuracy, imbalance_factor, nmi

__all__ = ["ari", "clustering_scores", "hungarian_accuracy", "imbalance_factor", "kmeans_quality", "nmi"]
