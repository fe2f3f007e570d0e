"""Evaluation as a library: functions from features or models to dicts of metrics."""
from .clustering import kmeans_quality
from .knn import knn_accuracy, knn_predict
from .metrics import ari, clustering_scores, hungarian_accuracy, imbalance_factor, nmi
from .retrieval import mean_average_precision, rmac_descriptors

__all__ = ["ari", "clustering_scores", "hungarian_accuracy", "imbalance_factor", "kmeans_quality", "knn_accuracy",
           "knn_predict", "mean_average_precision", "nmi", "rmac_descriptors"]
