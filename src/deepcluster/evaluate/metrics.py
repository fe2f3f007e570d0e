"""Scores of a clustering: NMI, ARI, accuracy under the best one-to-one matching, and cluster-size balance."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean normalisation) of two labellings of the same items."""
    return float(normalized_mutual_info_score(a, b))


def ari(a: np.ndarray, b: np.ndarray) -> float:
    return float(adjusted_rand_score(a, b))


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of items whose cluster maps to their label under the best one-to-one cluster->label matching
    (Hungarian algorithm on the contingency table); with more clusters than labels the extra ones count wrong."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, li), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def imbalance_factor(labels: np.ndarray, k: int | None = None) -> float:
    """``k * sum(n_i^2) / N^2`` over cluster sizes ``n_i`` (faiss's measure): 1 for equal sizes, k when one
    cluster holds everything."""
    counts = np.bincount(np.asarray(labels), minlength=k or 0).astype(np.float64)
    k = len(counts) if k is None else k
    return float(k * (counts ** 2).sum() / counts.sum() ** 2)


def clustering_scores(labels: np.ndarray, clusters: np.ndarray) -> dict:
    return {"nmi": nmi(labels, clusters), "ari": ari(labels, clusters), "acc": hungarian_accuracy(labels, clusters)}


def epoch_nmi_matrix(clusters: dict, most: int = 20, sample: int = 100_000, seed: int = 0
                     ) -> tuple[list[int], np.ndarray]:
    """NMI between the pseudo-labels of every two epochs (the paper's Fig. 2b asks for t against t - 1):
    ``(epochs, M)`` with ``M[a, b] = NMI(epochs[a], epochs[b])``. At most ``most`` epochs, evenly spaced with the
    first and the last, and at most ``sample`` images, the same random ones for every pair (NMI's estimate on a
    sample is close to the whole set's and costs a fraction of it at ImageNet's 1.28M)."""
    epochs = sorted(clusters)
    if len(epochs) > most:
        epochs = [epochs[i] for i in sorted(set(np.linspace(0, len(epochs) - 1, most).round().astype(int)))]
    n = len(clusters[epochs[0]]) if epochs else 0
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if n > sample else slice(None)
    labels = [np.asarray(clusters[e][rows]) for e in epochs]
    m = np.eye(len(epochs))
    for a in range(len(epochs)):
        for b in range(a):
            m[a, b] = m[b, a] = nmi(labels[a], labels[b])
    return epochs, m
