import numpy as np
import pytest

from deepcluster.clustering import KMeans, k_means, repair_empty_clusters
from deepcluster.evaluate import nmi


def blobs(k=8, per=100, d=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 5
    x = np.repeat(centers, per, 0) + rng.standard_normal((k * per, d)) * spread
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def test_kmeans_finds_separated_blobs():
    x, y = blobs()
    km = KMeans(8, seed=3, init="k-means++", n_init=3).fit(x)
    assert nmi(y, km.labels_) == pytest.approx(1.0)
    assert km.labels_.shape == (800,) and km.cluster_centers_.shape == (8, 16)
    assert km.inertia_ == pytest.approx(((x - km.cluster_centers_[km.labels_]) ** 2).sum(), rel=1e-5)
    assert np.array_equal(km.predict(x), km.labels_)


def test_random_init_restarts_keep_the_best_objective():
    x, _ = blobs(k=20, spread=1.0)
    one = KMeans(20, seed=0).fit(x)
    best = KMeans(20, seed=0, n_init=5).fit(x)
    assert best.inertia_ <= one.inertia_ * (1 + 1e-4)


def test_function_twin_matches_the_estimator():
    x, _ = blobs(seed=1)
    c, labels, inertia = k_means(x, 8, seed=5)
    km = KMeans(8, seed=5).fit(x)
    np.testing.assert_array_equal(labels, km.labels_)
    assert inertia == pytest.approx(km.inertia_)


def test_seed_changes_the_start_and_is_reproducible():
    x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    a, b, c = (KMeans(20, seed=s).fit(x).labels_ for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_kmeans_leaves_no_cluster_empty_on_duplicated_points():
    # 300 copies of 3 points and k = 10: faiss must re-split; every cluster ends non-empty and the count says so.
    x = np.repeat(np.eye(3, 4, dtype=np.float32), 100, 0)
    km = KMeans(10, seed=0).fit(x)
    assert np.bincount(km.labels_, minlength=10).min() > 0
    assert km.n_resplit_ >= 7


def test_kmeans_rejects_k_above_n():
    with pytest.raises(ValueError, match="k <= N"):
        KMeans(11).fit(np.zeros((10, 2), np.float32))


def test_repair_fills_every_empty_cluster_and_counts_them():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 200)  # clusters 3..7 empty
    centroids = rng.standard_normal((8, 5)).astype(np.float32)
    new, cent, n = repair_empty_clusters(x, labels, centroids, rng)
    assert n == 5
    counts = np.bincount(new, minlength=8)
    assert counts.min() > 0 and counts.sum() == 200
    for j in range(8):  # centroids are the means of their points after the split
        if j >= 3:
            np.testing.assert_allclose(cent[j], x[new == j].mean(0), atol=1e-5)
    # points only move from a donor to the cluster it fed: nothing already in 0..2 changes cluster among 0..2
    moved = new != labels
    assert (new[moved] >= 3).all()


def test_repair_splits_identical_points_in_half():
    x = np.ones((10, 2), np.float32)
    new, _, n = repair_empty_clusters(x, np.zeros(10, np.int64), np.ones((2, 2), np.float32),
                                      np.random.default_rng(0))
    assert n == 1 and sorted(np.bincount(new)) == [5, 5]


def test_repair_with_nothing_empty_changes_nothing():
    x, y = blobs(k=3, per=5)
    new, _, n = repair_empty_clusters(x, y, np.zeros((3, 16), np.float32), np.random.default_rng(0))
    assert n == 0 and np.array_equal(new, y)
