"""How many groups: a curve over candidate numbers of groups K, scored without labels on the cuts of a tree
(:mod:`~deepcluster.clustering.hierarchy`), and the K it points to, with the range of K that the curve cannot
tell apart from it.

Criteria (``CRITERIA``): ``silhouette``, the mean silhouette (Rousseeuw 1987) of the points' groups;
``calinski``, the Calinski-Harabasz ratio of between- to within-group dispersion; ``ward``, the jump in the
tree's merge heights (the merge that would join two of the K groups, over the one that made the K-th). The first
two are scored on several disjoint samples of points, and the spread between samples is the curve's noise: every
K whose mean score is within two standard errors of the best one's is as good, as far as the curve can say.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hierarchy import cut

CRITERIA = ("silhouette", "calinski", "ward")
SAMPLE = 2000  # points per sample: silhouettes cost sample^2 distances
SAMPLES = 3  # disjoint samples, whose spread gives the curve's noise
MAX_K = 100


def silhouette(d: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of ``labels (n,)`` given the Euclidean distances ``d (n, n)``; a point alone in its group
    scores 0 (scikit-learn's convention). Sums of distances to every group come from one product with the
    groups' indicator matrix: O(n^2 k)."""
    _, lab = np.unique(labels, return_inverse=True)
    k = lab.max() + 1
    if k < 2:
        return 0.0
    onehot = np.zeros((len(lab), k))
    onehot[np.arange(len(lab)), lab] = 1
    sums, counts = d @ onehot, onehot.sum(0)
    own = counts[lab]
    a = sums[np.arange(len(lab)), lab] / np.maximum(own - 1, 1)
    mean_other = sums / counts
    mean_other[np.arange(len(lab)), lab] = np.inf
    b = mean_other.min(1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def calinski(x: np.ndarray, labels: np.ndarray) -> float:
    """Calinski-Harabasz index of ``labels (n,)`` on ``x (n, d)``: between-group over within-group dispersion,
    each per degree of freedom."""
    _, lab = np.unique(labels, return_inverse=True)
    k, n = lab.max() + 1, len(x)
    if k < 2 or k >= n:
        return 0.0
    counts = np.bincount(lab)
    means = np.zeros((k, x.shape[1]))
    np.add.at(means, lab, x)
    means /= counts[:, None]
    between = (counts * ((means - x.mean(0)) ** 2).sum(1)).sum()
    within = ((x - means[lab]) ** 2).sum()
    return float(between * (n - k) / max(within * (k - 1), 1e-12))


@dataclass
class Choice:
    """The curve and what it says. ``ks``: the K scored; ``scores`` (K,): the criterion's mean (higher is
    better); ``noise`` (K,): its standard error over the samples; ``best``: the K of the highest score;
    ``low``, ``high``: the range of K that score within noise (two standard errors) of the best; ``k``: the K
    chosen, ``low``: the fewest groups the curve cannot tell from the best (the parsimony of the gap statistic's
    and CART's one-standard-error rules: Tibshirani et al. 2001, Breiman et al. 1984); ``flat``: whether that
    range is wide (``high`` at least 1.5 ``low``, and more than two values)."""

    criterion: str
    ks: list
    scores: list
    noise: list
    k: int
    low: int
    high: int
    flat: bool = field(default=False)
    best: int = 0

    @property
    def at_edge(self) -> bool:
        """Whether the best K is the largest one scored: the curve may go on rising beyond it."""
        return self.best == self.ks[-1]

    def describe(self) -> str:
        score = lambda k: f"{self.criterion} {self.scores[self.ks.index(k)]:.3f}"
        if self.at_edge:
            return (f"the curve is still rising at the largest K scored ({self.best}, {score(self.best)}): the "
                    f"images may form more groups than it can tell, or none it can find; K = {self.k} is the "
                    f"fewest within noise of it; give a number instead")
        said = f"K = {self.k} ({score(self.k)})" if self.k == self.best else \
            f"K = {self.k}, the fewest groups within noise of the best (K = {self.best}, {score(self.best)})"
        if self.flat:
            return f"{said}, but the curve is flat: every K from {self.low} to {self.high} scores within its noise"
        return f"{said}; within noise: {self.low}-{self.high}"

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "k": self.k, "best": self.best, "low": self.low, "high": self.high,
                "flat": self.flat, "ks": self.ks, "scores": self.scores, "noise": self.noise}


def sample_size(n: int) -> int:
    """Points per sample: ``SAMPLES`` disjoint samples of at most ``SAMPLE`` points each."""
    return min(SAMPLE, n // SAMPLES)


def candidate_ks(n_leaves: int, n: int) -> list[int]:
    """2 .. the largest K a curve scores: at most ``MAX_K``; half the leaves (a cut near the leaves is the leaves'
    own k-means more than the tree); a fifth of a sample's points (five per group on average)."""
    return list(range(2, max(3, min(MAX_K, n_leaves // 2, sample_size(n) // 5) + 1)))


def choose_k(x: np.ndarray, leaf_of: np.ndarray, z: np.ndarray, leaf_sizes: np.ndarray,
             criterion: str = "silhouette", seed: int = 0, ks: list | None = None) -> Choice:
    """The number of groups the tree ``z`` over the points ``x (N, d)`` (each in leaf ``leaf_of (N,)``) is best
    cut into, by ``criterion``, over ``ks`` (default :func:`candidate_ks`)."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion '{criterion}': choose one of {', '.join(CRITERIA)}")
    n_leaves = len(z) + 1
    ks = ks or candidate_ks(n_leaves, len(x))
    if criterion == "ward":
        h = z[:, 2]
        # going from K to K - 1 groups takes merge L - K; the K-th group was made by merge L - K - 1
        score = np.array([h[n_leaves - k] / max(h[n_leaves - k - 1], 1e-12) for k in ks])
        return _decide(criterion, ks, score, np.zeros(len(ks)), tolerance=0.1 * (score.max() - 1))
    cuts = {k: cut(z, k, leaf_sizes) for k in ks}  # the leaves' groups at each K; the merge heights need none
    order, size = np.random.default_rng(seed).permutation(len(x)), sample_size(len(x))
    samples = [order[i * size:(i + 1) * size] for i in range(SAMPLES)]
    rows = []
    for idx in samples:
        idx = np.sort(idx)
        xs = np.asarray(x[idx], np.float64)
        if criterion == "silhouette":
            sq = (xs * xs).sum(1)
            d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * xs @ xs.T, 0))
            rows.append([silhouette(d, cuts[k][leaf_of[idx]]) for k in ks])
        else:
            rows.append([calinski(xs, cuts[k][leaf_of[idx]]) for k in ks])
    rows = np.array(rows)
    noise = rows.std(0, ddof=1) / np.sqrt(len(rows))
    return _decide(criterion, ks, rows.mean(0), noise)


def _decide(criterion: str, ks: list, score: np.ndarray, noise: np.ndarray, tolerance: float | None = None
            ) -> Choice:
    best = int(np.argmax(score))
    tol = 2 * noise[best] if tolerance is None else tolerance
    within = [k for k, s in zip(ks, score) if s >= score[best] - tol]
    low, high = min(within), max(within)
    return Choice(criterion, list(ks), [round(float(s), 5) for s in score], [round(float(e), 5) for e in noise],
                  low, low, high, flat=high >= 1.5 * low and len(within) > 2, best=int(ks[best]))
