import numpy as np
import pytest

from deepcluster.preprocess import PCAWhitening, l2_normalize, preprocess_features, span_coordinates


def correlated(n=2000, d=40, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 3 + 5).astype(np.float32)


def test_whitening_gives_identity_covariance():
    x = correlated()
    z = PCAWhitening(16).fit_transform(x)
    assert z.shape == (2000, 16)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(16), atol=1e-3)


def test_components_are_the_top_variance_directions():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 3)) * np.array([10.0, 1.0, 0.1])
    p = PCAWhitening(2).fit(x)
    np.testing.assert_allclose(np.abs(p.components_), [[1, 0, 0], [0, 1, 0]], atol=0.02)
    np.testing.assert_allclose(p.explained_variance_, [100, 1], rtol=0.1)


def test_dimension_is_capped_by_the_feature_dimension():
    x = correlated(d=10)
    assert PCAWhitening(256).fit_transform(x).shape == (2000, 10)


def test_preprocess_rows_are_unit_length():
    z = preprocess_features(correlated(), pca_dim=8)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)


def test_l2_normalize_leaves_zero_rows_zero():
    z = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(z, [[0.6, 0.8], [0, 0]])


def test_transform_applies_the_fitted_projection_to_new_data():
    x = correlated(seed=2)
    p = PCAWhitening(5).fit(x[:1000])
    np.testing.assert_allclose(p.transform(x[1000:]), (x[1000:] - p.mean_) @ p.projection_, rtol=1e-4, atol=1e-4)


def test_unwhitened_pca_keeps_the_variance_of_each_component():
    rng = np.random.default_rng(3)
    rotation = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    x = (rng.standard_normal((4000, 6)) * [5, 4, 3, 2, 1, 0.5]) @ rotation
    z = PCAWhitening(4, whiten=False).fit(x).transform(x)
    np.testing.assert_allclose(z.std(0, ddof=1), [5, 4, 3, 2], rtol=0.05)
    np.testing.assert_allclose(PCAWhitening(4).fit(x).transform(x).std(0, ddof=1), 1, rtol=1e-3)


def test_fewer_points_than_dimensions_give_the_covariance_pca():
    # N < D takes the N x N Gram-matrix route: same eigenvalues and components as the D x D covariance
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((60, 8)) @ rng.standard_normal((8, 100)) + 0.05 * rng.standard_normal((60, 100)))
    x = x.astype(np.float32)
    p = PCAWhitening(20).fit(x)
    xc = (x - x.mean(0)).astype(np.float64)
    vals, vecs = np.linalg.eigh(xc.T @ xc / 59)
    order = np.argsort(vals)[::-1][:20]
    np.testing.assert_allclose(p.explained_variance_, vals[order], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.abs((p.components_[:8] * vecs[:, order[:8]].T).sum(1)), 1.0, atol=1e-6)
    z = p.transform(x)[:, :8]
    np.testing.assert_allclose(np.cov(z.T), np.eye(8), atol=1e-3)


def test_span_coordinates_keep_every_distance_k_means_reads_and_cluster_alike():
    from scipy.spatial.distance import cdist

    from deepcluster import KMeans

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 120)
    x = (rng.standard_normal((5, 900))[truth] + 0.8 * rng.standard_normal((120, 900))).astype(np.float32)
    z = span_coordinates(x)
    assert z.shape == (120, 119)  # 120 centred rows span 119 dimensions
    np.testing.assert_allclose(cdist(z, z), cdist(x, x), rtol=1e-4, atol=1e-3)
    means = np.stack([x[truth == c].mean(0) for c in range(5)])  # what k-means' centroids are
    zmeans = np.stack([z[truth == c].mean(0) for c in range(5)])
    np.testing.assert_allclose(cdist(z, zmeans), cdist(x, means), rtol=1e-4, atol=1e-3)
    a, b = (KMeans(5, 20, seed=3, n_init=3, init="k-means++").fit(v) for v in (x, z))
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-4)
    tall = x[:, :50]  # more points than dimensions: left as they are
    assert np.array_equal(span_coordinates(tall), tall)
