"""The tree over a run's leaves (Ward's linkage weighted by the leaves' sizes), its cuts, and the curve that
estimates how many groups there are."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from deepcluster.clustering.hierarchy import cut, leaf_count, ward_tree
from deepcluster.clustering.number import CRITERIA, _decide, calinski, choose_k, silhouette


def partition(labels) -> set:
    """A labelling as a set of frozensets of indices: equal partitions compare equal whatever the numbering."""
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == g).tolist()) for g in np.unique(labels)}


def test_ward_tree_is_scipys_ward_for_unit_weights():
    x = np.random.default_rng(0).normal(size=(60, 5))
    ours, ref = ward_tree(x, np.ones(60)), linkage(x, "ward")
    np.testing.assert_allclose(np.sort(ours[:, 2]), np.sort(ref[:, 2]), rtol=1e-9)
    for k in (2, 3, 7, 20, 59):
        assert partition(cut(ours, k)) == partition(fcluster(ref, k, "maxclust"))


def test_a_leaf_of_size_w_merges_as_w_copies_of_its_centroid():
    """Weighted Ward on leaf centroids is Ward on the points, each leaf's points collapsed onto its centroid:
    scipy's Ward on the leaves repeated by their sizes cuts into the same groups of leaves."""
    rng = np.random.default_rng(1)
    centroids, sizes = rng.normal(size=(25, 4)), rng.integers(1, 9, 25)
    ours = ward_tree(centroids, sizes)
    owner = np.repeat(np.arange(25), sizes)
    ref = linkage(centroids[owner] + rng.normal(scale=1e-9, size=(len(owner), 4)), "ward")
    for k in (2, 4, 9, 17):
        expanded = fcluster(ref, k, "maxclust")
        leaf_labels = np.array([expanded[owner == i][0] for i in range(25)])
        assert all(len(set(expanded[owner == i])) == 1 for i in range(25))  # copies of a leaf stay together
        assert partition(cut(ours, k, sizes)) == partition(leaf_labels)
    # unit weights would merge otherwise: the weights are used
    assert any(partition(cut(ours, k, sizes)) != partition(cut(ward_tree(centroids, np.ones(25)), k))
               for k in range(2, 25))


def test_cut_gives_k_groups_numbered_by_size_and_nested():
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 20, 40)
    z = ward_tree(rng.normal(size=(40, 3)), sizes)
    previous = None
    for k in range(2, 41):
        labels = cut(z, k, sizes)
        assert sorted(set(labels.tolist())) == list(range(k))
        points = np.bincount(labels, weights=sizes)
        assert np.all(np.diff(points) <= 0)  # group 0 holds the most points
        if previous is not None:  # each group at k - 1 is a union of groups at k
            assert all(len(set(previous[labels == g])) == 1 for g in range(k))
        previous = labels


def test_leaf_count_is_never_below_the_training_k_nor_above_the_images():
    assert leaf_count(60_000, 10) == 980 and leaf_count(10_000_000, 10) == 2000
    assert leaf_count(10_000_000, 10_000) == 10_000  # the paper's k: the leaves are at least the training's
    assert leaf_count(50, 10) == 29 and leaf_count(30, 40) == 30


def test_silhouette_and_calinski_are_scikit_learns():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(300, 6)), rng.integers(0, 5, 300)
    labels[0] = 5  # a group of one point scores 0
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    assert silhouette(d, labels) == pytest.approx(silhouette_score(x, labels), rel=1e-9)
    assert calinski(x, labels) == pytest.approx(calinski_harabasz_score(x, labels), rel=1e-9)


def blobs(k: int, n: int, seed: int, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 16))
    y = rng.integers(0, k, n)
    return (centres[y] + spread * rng.normal(size=(n, 16))).astype(np.float32), y


def tree_of(x: np.ndarray, leaves: int, seed: int = 0):
    from deepcluster.clustering import KMeans

    km = KMeans(leaves, n_iter=20, seed=seed, init="k-means++").fit(x)
    sizes = np.bincount(km.labels_, minlength=leaves)
    return km.labels_, ward_tree(km.cluster_centers_.astype(np.float64), sizes), sizes


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("k", [3, 7, 15])
def test_each_criterion_finds_the_number_of_separated_blobs(criterion, k):
    x, _ = blobs(k, 3000, seed=k)
    leaf_of, z, sizes = tree_of(x, 60)
    choice = choose_k(x, leaf_of, z, sizes, criterion)
    assert choice.k == k and choice.low <= k <= choice.high and not choice.flat
    assert choice.ks[0] == 2 and len(choice.scores) == len(choice.ks)


def test_the_choice_never_claims_more_than_the_curve_says():
    ks = list(range(2, 12))
    # a plateau: K = 4 .. 9 all within two standard errors of the best; the fewest of them is taken
    score = np.array([0.10, 0.15, 0.30, 0.31, 0.305, 0.30, 0.31, 0.302, 0.2, 0.1])
    choice = _decide("silhouette", ks, score, np.full(10, 0.01))
    assert (choice.best, choice.k, choice.low, choice.high, choice.flat) == (5, 4, 4, 9, True)
    assert choice.describe() == ("K = 4, the fewest groups within noise of the best (K = 5, silhouette 0.310), but "
                                 "the curve is flat: every K from 4 to 9 scores within its noise")
    # a clear peak: the same curve with a tenth of the noise names one K
    choice = _decide("silhouette", ks, score, np.full(10, 0.001))
    assert (choice.best, choice.k, choice.low, choice.high, choice.flat) == (5, 5, 5, 8, False)
    assert choice.describe() == "K = 5 (silhouette 0.310); within noise: 5-8"
    # still rising at the largest K scored: said, and no K claimed as the answer
    choice = _decide("silhouette", ks, np.linspace(0, 1, 10), np.full(10, 0.01))
    assert choice.at_edge and "still rising" in choice.describe() and "give a number" in choice.describe()


def test_the_curve_is_scored_on_three_disjoint_samples_whose_spread_is_its_noise():
    x, _ = blobs(4, 900, seed=5, spread=0.8)
    leaf_of, z, sizes = tree_of(x, 40)
    choice = choose_k(x, leaf_of, z, sizes, "silhouette")
    assert all(e > 0 for e in choice.noise)
    assert choice.ks == list(range(2, 21))  # half the 40 leaves; a fifth of 300 points per sample is 60


def test_an_unknown_criterion_is_refused():
    x, _ = blobs(3, 200, 0)
    leaf_of, z, sizes = tree_of(x, 20)
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_k(x, leaf_of, z, sizes, "gap")
