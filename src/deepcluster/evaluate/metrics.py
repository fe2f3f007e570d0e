"""Scores of a clustering: NMI, ARI, accuracy under the best one-to-one matching, and cluster-size balance
(:func:`~deepcluster.clustering.health.imbalance_factor`, which each epoch's clustering reports too)."""
from __future__ import annotations

import numpy as np

from ..clustering.health import imbalance_factor  # noqa: F401 - a score of a clustering, here with the others

# NMI and ARI are computed here from the sparse contingency table, by their definitions (Vinh, Epps and Bailey,
# JMLR 2010, arithmetic-mean normalisation; Hubert and Arabie, 1985), with scikit-learn's conventions for the
# degenerate cases, which the tests compare against: importing sklearn.metrics costs 0.6 s of every command.


def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray]:
    """The sparse contingency table of two labellings: ``(its non-zero cells n_ij, the row sum a_i and the column
    sum b_j of each of them, all row sums, all column sums)``."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"two labellings of different lengths: {len(a)} and {len(b)}")
    ai = np.unique(a, return_inverse=True)[1].astype(np.int64)
    bi = np.unique(b, return_inverse=True)[1].astype(np.int64)
    rows, cols = np.bincount(ai).astype(np.float64), np.bincount(bi).astype(np.float64)
    nb = max(len(cols), 1)
    codes, cells = np.unique(ai * nb + bi, return_counts=True)
    return cells.astype(np.float64), rows[codes // nb], cols[codes % nb], rows, cols


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean normalisation) of two labellings of the same items: 1 for
    two single-cluster labellings, 0 when the mutual information is."""
    cells, row_of, col_of, rows, cols = _contingency(a, b)
    if len(rows) == len(cols) <= 1:
        return 1.0
    n = rows.sum()
    mi = float((cells / n * (np.log(cells) + np.log(n) - np.log(row_of) - np.log(col_of))).sum())
    if mi <= 0:
        return 0.0
    return mi / max((_entropy(rows) + _entropy(cols)) / 2, np.finfo(np.float64).eps)


def ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labellings of the same items: 1 when they pair the items the same way."""
    cells, _, _, rows, cols = _contingency(a, b)
    n = rows.sum()
    pairs = lambda x: float((x * (x - 1)).sum() / 2)
    same_both, same_a, same_b, total = pairs(cells), pairs(rows), pairs(cols), n * (n - 1) / 2
    if same_a == same_b == same_both:  # every pair treated alike by both (including no pairs at all)
        return 1.0
    expected = same_a * same_b / total
    return float((same_both - expected) / ((same_a + same_b) / 2 - expected))


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of items whose cluster maps to their label under the best one-to-one cluster->label matching
    (Hungarian algorithm on the contingency table); with more clusters than labels the extra ones count wrong."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, li), 1)
    from scipy.optimize import linear_sum_assignment  # only when scoring against labels: 0.2 s of imports

    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


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
