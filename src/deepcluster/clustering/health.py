"""The one record of how a clustering went, which every estimator fills alike as ``health_``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Health:
    """``clusters``: clusters that hold points; ``repaired``: clusters the estimator mended (k-means: empty ones
    re-split; PIC: singletons moved into their nearest neighbour's cluster); ``singletons``: clusters of one point
    left; ``objective``: the mean squared distance of a point to its centroid (None where there are no centroids:
    PIC); ``graph_recall``: PIC on an approximate k-NN graph, the share of the true neighbours it holds."""

    clusters: int
    repaired: int
    singletons: int
    objective: Optional[float] = None
    graph_recall: Optional[float] = None

    @classmethod
    def of(cls, labels: np.ndarray, repaired: int, objective: Optional[float] = None,
           graph_recall: Optional[float] = None) -> "Health":
        sizes = np.bincount(labels)
        return cls(int((sizes > 0).sum()), int(repaired), int((sizes == 1).sum()), objective, graph_recall)

    def metrics(self) -> dict:
        """The figures of the training log (``metrics.jsonl``), under the names it has always used: k-means'
        objective and clusters re-split, or PIC's clusters found, singletons moved and singletons left (and its
        graph's recall, when approximate)."""
        if self.objective is not None:
            return {"kmeans_objective": self.objective, "empty_resplit": self.repaired}
        row = {"clusters_found": self.clusters, "singletons_moved": self.repaired, "singletons_left": self.singletons}
        return row if self.graph_recall is None else {**row, "knn_recall": self.graph_recall}


def imbalance_factor(labels: np.ndarray, k: int | None = None) -> float:
    """``k * sum(n_i^2) / N^2`` over cluster sizes ``n_i`` (faiss's measure): 1 for equal sizes, k when one
    cluster holds everything."""
    counts = np.bincount(np.asarray(labels), minlength=k or 0).astype(np.float64)
    k = len(counts) if k is None else k
    return float(k * (counts ** 2).sum() / counts.sum() ** 2)
