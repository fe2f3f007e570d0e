import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from deepcluster.clustering import PIC, Health, KMeans, gpu_available, k_means, repair_empty_clusters
from deepcluster.clustering.kmeans import _assign
from deepcluster.clustering.repair import split_empty
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


# --- the PyTorch backend (run here on the CPU) ---------------------------------------------------------------

def test_torch_backend_finds_the_same_partition_as_faiss():
    x, y = blobs(k=8, per=250, d=16)
    kw = dict(seed=3, init="k-means++", n_init=3)
    f = KMeans(8, backend="faiss", **kw).fit(x)
    t = KMeans(8, backend="torch", device="cpu", **kw).fit(x)
    assert t.backend_ == "torch:cpu" and f.backend_ == "faiss:cpu"
    assert adjusted_rand_score(f.labels_, t.labels_) == 1.0 and adjusted_rand_score(y, t.labels_) == 1.0
    assert t.inertia_ == pytest.approx(f.inertia_, rel=0.01)
    assert t.labels_.dtype == np.int64 and t.labels_.shape == (2000,)
    assert t.cluster_centers_.dtype == np.float32 and t.cluster_centers_.shape == (8, 16)
    # inertia_ is the final assignment's distances, computed as |x|^2 - 2 x.c + |c|^2: close, not exact
    assert t.inertia_ == pytest.approx(((x - t.cluster_centers_[t.labels_]) ** 2).sum(), rel=1e-3)
    assert t.health_.metrics() == {"kmeans_objective": t.inertia_ / 2000, "empty_resplit": t.n_resplit_}
    assert np.array_equal(t.predict(x), t.labels_)


def test_torch_backend_random_init_is_seeded():
    x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    a, b, c = (KMeans(20, seed=s, backend="torch").fit(x).labels_ for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_torch_backend_objective_never_increases():
    x = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32)
    km = KMeans(20, n_iter=30, seed=0, backend="torch").fit(x)
    obj = km.objective_
    assert km.n_resplit_ == 0  # splits may raise the objective a little; this data set has none
    assert km.n_iter_ == len(obj) >= 10 and obj[-1] < obj[0]
    assert (np.diff(obj) <= 1e-6 * obj[:-1]).all()
    # the last objective is the inertia of the kept centroids' assignment, up to float32 rounding
    assert km.inertia_ <= obj[-1] * (1 + 1e-5)


def test_torch_backend_splits_empty_clusters():
    # 300 copies of 3 points and k = 10: the random init duplicates centroids, so >= 7 clusters go empty at once
    x = np.repeat(np.eye(3, 4, dtype=np.float32), 100, 0)
    km = KMeans(10, seed=0, backend="torch").fit(x)
    assert np.bincount(km.labels_, minlength=10).min() > 0
    assert km.n_resplit_ >= 7


def testsplit_empty_halves_a_big_donor_and_spares_singletons():
    eps = 1 / 1024
    centroids = np.array([[9, 9], [1, 2], [5, 5]], np.float32)
    counts = np.array([0, 5, 1], np.float64)  # cluster 1 is the only one with more than one point
    assert split_empty(centroids, counts, np.random.default_rng(0)) == 1
    np.testing.assert_allclose(centroids[0], [1 + eps, 2 * (1 - eps)], rtol=1e-7)  # relative, opposite signs
    np.testing.assert_allclose(centroids[1], [1 - eps, 2 * (1 + eps)], rtol=1e-7)
    np.testing.assert_array_equal(centroids[2], [5, 5])
    np.testing.assert_array_equal(counts, [2.5, 2.5, 1])
    # a second empty cluster in the same pass takes from one of the halves, never from the singleton
    centroids = np.array([[9, 9], [1, 2], [5, 5], [7, 7]], np.float32)
    counts = np.array([0, 5, 1, 0], np.float64)
    assert split_empty(centroids, counts, np.random.default_rng(0)) == 2
    assert counts.sum() == 6 and counts.min() > 0 and counts[2] == 1 and counts[3] == 1.25
    np.testing.assert_array_equal(centroids[2], [5, 5])


def test_chunked_assignment_equals_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((103, 6)).astype(np.float32)
    c = rng.standard_normal((7, 6)).astype(np.float32)
    brute = ((x[:, None] - c[None]) ** 2).sum(-1)
    for chunk in (10, 1, None):  # blocks that do not divide N, one row at a time, and the default (one block)
        labels, d2 = _assign(torch.from_numpy(x), torch.from_numpy(c), chunk=chunk)
        assert labels.dtype == torch.int64
        np.testing.assert_array_equal(labels.numpy(), brute.argmin(1))
        np.testing.assert_allclose(d2.numpy(), brute.min(1), rtol=1e-5, atol=1e-5)


def test_the_constructor_only_stores_and_fit_refuses_unknown_settings():
    """scikit-learn's rule: ``__init__`` stores its arguments (so ``set_params``-style changes work); ``fit``
    checks them."""
    x, _ = blobs(k=3, per=10)
    km = KMeans(8, backend="cuda", init="kmeans", device="gpu")
    assert (km.backend, km.init, km.device) == ("cuda", "kmeans", "gpu")
    with pytest.raises(ValueError, match="unknown k-means init 'kmeans': choose one of random, k-means\\+\\+"):
        km.fit(x)
    km.init = "random"
    with pytest.raises(ValueError, match="unknown k-means backend 'cuda': choose one of auto, faiss, torch"):
        km.fit(x)
    km.backend = "auto"
    with pytest.raises(ValueError, match="unknown clustering device 'gpu': choose one of auto, cpu, cuda"):
        km.fit(x)
    km.device = "cpu"
    assert km.fit(x) is km and km.backend_ == "faiss:cpu"


def test_both_estimators_fill_one_health_record():
    x, _ = blobs(k=3, per=20)
    km, pic = KMeans(3, seed=0).fit(x), PIC().fit(x)
    for est in (km, pic):
        h = est.health_
        assert isinstance(h, Health)
        sizes = np.bincount(est.labels_)
        assert h.clusters == int((sizes > 0).sum()) and h.singletons == int((sizes == 1).sum())
    assert km.health_.objective == pytest.approx(km.inertia_ / len(x)) and km.health_.repaired == km.n_resplit_
    assert pic.health_.objective is None and pic.health_.repaired == pic.n_singletons_moved_


@pytest.mark.skipif(torch.cuda.is_available() or gpu_available(), reason="needs a machine without a GPU")
def test_gpu_demanded_without_one_is_refused_and_auto_falls_back_to_faiss_cpu():
    x, _ = blobs(k=3, per=10)
    with pytest.raises(ValueError, match="device='cuda' but no CUDA GPU is visible"):
        KMeans(3, device="cuda").fit(x)
    with pytest.raises(ValueError, match="device='cuda' but no CUDA GPU is visible"):
        KMeans(3, device="cuda", backend="torch").fit(x)
    with pytest.raises(ValueError, match="backend='faiss' but this faiss has no GPU support"):
        KMeans(3, device="cuda", backend="faiss").fit(x)
    with pytest.raises(ValueError, match="device='cuda' but no CUDA GPU is visible"):
        PIC(device="cuda").fit(x)
    assert PIC(device="auto").fit(x).n_clusters_ >= 1
    assert KMeans(3).fit(x).backend_ == "faiss:cpu"
    assert KMeans(3, backend="torch").fit(x).backend_ == "torch:cpu"


def test_training_clustering_takes_its_restarts_from_the_config():
    """Ten blobs: single random starts (the paper's, the default) sometimes merge two of them; ten k-means++
    starts (--kmeans-restarts 10) find all ten from every seed."""
    from dataclasses import replace

    from deepcluster import Config
    from deepcluster.clustering import build_clustering

    rng = np.random.default_rng(0)
    y = np.arange(2000) % 10
    x = ((rng.normal(size=(10, 16)) * 4)[y] + rng.normal(size=(2000, 16))).astype(np.float32)
    cfg = Config(k=10)
    score = {r: [nmi(y, build_clustering(replace(cfg, kmeans_restarts=r), seed).fit(x).labels_)
                 for seed in range(8)] for r in (1, 10)}
    assert min(score[10]) > 0.999
    assert min(score[1]) < 0.99


def test_the_estimators_are_scikit_learn_estimators():
    # clone, a Pipeline of the whitening and k-means, and the fitted checks behave as scikit-learn's own
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import Pipeline

    from deepcluster.preprocess import PCAWhitening, l2_normalize

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    y = np.repeat(np.arange(3), 50)
    x = (centres[y] + rng.normal(size=(150, 20))).astype(np.float32)
    km = KMeans(3, seed=1, init="k-means++", n_init=3)
    copy = clone(km)
    assert copy is not km and copy.get_params() == km.get_params() and not hasattr(copy, "labels_")
    assert clone(PIC(n_neighbors=7)).get_params()["n_neighbors"] == 7
    assert clone(PCAWhitening(8, whiten=False)).get_params() == {"n_components": 8, "eps": 1e-5, "whiten": False}

    pipe = Pipeline([("white", PCAWhitening(2)), ("km", KMeans(3, seed=0, init="k-means++", n_init=5))]).fit(x)
    labels = pipe.predict(x)
    assert pipe.named_steps["km"].n_features_in_ == 2 and pipe.named_steps["white"].n_features_in_ == 20
    assert np.array_equal(labels, pipe.named_steps["km"].labels_)
    assert len(np.unique(labels)) == 3 and all(len(np.unique(labels[y == c])) == 1 for c in range(3))
    # the same as the steps by hand
    white = PCAWhitening(2).fit(x)
    assert np.array_equal(KMeans(3, seed=0, init="k-means++", n_init=5).fit(white.transform(x)).labels_, labels)

    with pytest.raises(NotFittedError):
        KMeans(3).predict(x)
    with pytest.raises(NotFittedError):
        PCAWhitening(2).transform(x)
    with pytest.raises(ValueError, match="fitted on rows of 20 values; these have 19"):
        km.fit(x).predict(x[:, :19])
    with pytest.raises(ValueError, match="fitted on rows of 20 values"):
        white.transform(l2_normalize(x[:, :5]))
    with pytest.raises(ValueError, match="2-D array"):
        km.predict(x[0])
