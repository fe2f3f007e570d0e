"""The clustering protocol's k-means keeps the best of several starts, chosen without the labels."""
import numpy as np

from deepcluster.evaluate import kmeans_quality


def ten_blobs(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    return ((rng.normal(size=(10, 16)) * 4)[y] + rng.normal(size=(n, 16))).astype(np.float32), y


def test_restarts_find_the_blobs_that_single_starts_merge():
    x, y = ten_blobs()
    single = kmeans_quality(x, y, seeds=8, restarts=1)
    best = kmeans_quality(x, y, seeds=8)
    assert best["nmi"] > 0.999 and best["acc_std"] < 1e-9
    assert single["acc"] < best["acc"] - 0.02  # some single starts merge two blobs and split another


def test_shuffling_the_labels_against_the_features_scores_chance():
    x, y = ten_blobs()
    assert kmeans_quality(x, np.random.default_rng(1).permutation(y), seeds=1)["nmi"] < 0.05
