"""DeepCluster: unsupervised learning of visual features by clustering (Caron et al., ECCV 2018).

Python API::

    from deepcluster import Config, train
    summary = train(Config(data="fashion-mnist", k=100, epochs=2), out="runs/try")

    from deepcluster import DeepCluster          # the same training, scikit-learn's shape
    dc = DeepCluster(out="runs/try", k=20).fit("path/to/images")
    dc.labels_, dc.predict("path/to/new/images")
"""
from . import distributed
from .clustering import PIC, KMeans, build_clustering, k_means, repair_empty_clusters
from .config import Config, ConfigError, DeepClusterError, TrainingError
from .data import ImageFolder, TensorImages, fashion_mnist, in_memory
from .estimator import DeepCluster
from .evaluate import hungarian_accuracy, kmeans_quality, knn_accuracy, nmi
from .evaluate.compare import compare_runs
from .evaluate.probe import linear_probes
from .evaluate.protocols import PROTOCOLS, load_for_eval, run_protocol
from .features import extract_features
from .models import DeepClusterNet, Sobel, build_model
from .preprocess import PCAWhitening, l2_normalize, preprocess_features
from .sampler import pseudo_labels, uniform_over_clusters
from .train import train

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "DeepCluster", "DeepClusterError", "DeepClusterNet", "ImageFolder", "KMeans",
           "PCAWhitening", "PIC", "PROTOCOLS", "Sobel", "TensorImages", "TrainingError", "build_clustering",
           "build_model", "compare_runs", "distributed", "extract_features", "fashion_mnist", "hungarian_accuracy",
           "in_memory", "k_means", "kmeans_quality", "knn_accuracy", "l2_normalize", "linear_probes",
           "load_for_eval", "nmi", "preprocess_features", "pseudo_labels", "repair_empty_clusters", "run_protocol",
           "train", "uniform_over_clusters"]
