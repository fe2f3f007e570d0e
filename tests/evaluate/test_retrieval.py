import numpy as np
import pytest
import torch

from deepcluster.evaluate.retrieval import (
    RegionWhitening,
    average_precision,
    mean_average_precision,
    regional_max,
    rmac_descriptors,
    rmac_from_maps,
    rmac_regions,
)


def random_maps(n=6, c=16, h=7, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, c, h, w, generator=g))  # last conv layers are post-ReLU


@pytest.mark.parametrize("h,w", [(14, 14), (7, 9), (20, 8), (2, 3), (1, 1)])
def test_regions_inside_map_and_three_levels(h, w):
    boxes = rmac_regions(h, w, levels=3)
    for y0, x0, y1, x1 in boxes:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 == x1 - x0  # square
    covered = np.zeros((h, w), bool)
    for y0, x0, y1, x1 in boxes:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert len(boxes) >= 3


def test_regions_of_square_map_follow_rmac_grid():
    boxes = rmac_regions(14, 14, levels=3)
    sides = [y1 - y0 for y0, _, y1, _ in boxes]
    # Levels 1..3: 1, 4 and 9 squares of side 2*14/(l+1).
    assert sides == [14] + [9] * 4 + [7] * 9
    assert (0, 0, 7, 7) in boxes and (7, 7, 14, 14) in boxes


def test_regions_of_wide_map_have_more_along_long_side():
    boxes = rmac_regions(10, 20, levels=1)
    assert len(boxes) >= 2 and all(y0 == 0 and y1 == 10 for y0, _, y1, _ in boxes)
    assert boxes[0][1] == 0 and boxes[-1][3] == 20


def test_regional_max_matches_manual_max():
    fmap = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    fmap[1, 2, 0, 0] = 1000.0
    regions = [(0, 0, 2, 2), (1, 2, 4, 5), (0, 0, 4, 5)]
    out = regional_max(fmap, regions)
    assert out.shape == (2, 3, 3)
    for r, (y0, x0, y1, x1) in enumerate(regions):
        for b in range(2):
            for c in range(3):
                assert out[b, r, c] == fmap[b, c, y0:y1, x0:x1].max()
    assert out[1, 0, 2] == 1000.0 and out[1, 1, 2] != 1000.0


def test_rmac_from_maps_shape():
    maps = random_maps(h=7, w=9)
    regional = rmac_from_maps(maps)
    assert regional.shape == (6, len(rmac_regions(7, 9)), 16) and regional.dtype == np.float32


def test_average_precision_perfect_and_known():
    assert average_precision(np.array([0.9, 0.8, 0.1, 0.0]), np.array([True, True, False, False])) == 1.0
    # Relevant at ranks 1 and 3: (1/1 + 2/3) / 2.
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([True, False, True, False]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    # Order comes from the scores, not the input order: ranked 1, 3, 2, 0, so relevant at ranks 3 and 4.
    ap = average_precision(np.array([0.1, 0.9, 0.2, 0.8]), np.array([True, False, True, False]))
    assert ap == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert average_precision(np.array([0.3, 0.2]), np.array([False, False])) == 0.0


def test_map_of_perfect_features_is_one():
    rng = np.random.default_rng(0)
    qlab, dlab = rng.integers(0, 5, 30), rng.integers(0, 5, 100)
    feats = lambda lab: np.eye(5)[lab] + 1e-3 * rng.standard_normal((len(lab), 5))
    assert mean_average_precision(feats(qlab), feats(dlab), qlab, dlab) == pytest.approx(1.0)


def test_map_of_random_features_is_near_chance():
    rng = np.random.default_rng(0)
    qlab, dlab = np.arange(100) % 5, np.arange(500) % 5
    m = mean_average_precision(rng.standard_normal((100, 32)), rng.standard_normal((500, 32)), qlab, dlab)
    assert 0.1 < m < 0.35


def test_exclude_self_removes_the_query_from_its_ranking():
    x = np.random.default_rng(0).standard_normal((20, 8))
    labels = np.arange(20)
    assert mean_average_precision(x, x, labels, labels) == pytest.approx(1.0)
    assert mean_average_precision(x, x, labels, labels, exclude_self=True) == 0.0
    # With pairs sharing a label, each query's only relevant item is its partner, wherever it ranks.
    pairs = np.arange(20) // 2
    m = mean_average_precision(x, x, pairs, pairs, exclude_self=True, chunk=7)
    assert 0.0 < m < 1.0


def test_whitening_learned_elsewhere_gives_unit_descriptors():
    train, test = rmac_from_maps(random_maps(n=40, seed=1)), rmac_from_maps(random_maps(n=5, seed=2))
    whitening = RegionWhitening(n_components=8).fit(train.reshape(-1, train.shape[-1]))
    desc = rmac_descriptors(test, whitening)
    assert desc.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    plain = rmac_descriptors(test)
    assert plain.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)


def test_whitening_decorrelates_the_fitted_regions():
    train = rmac_from_maps(random_maps(n=60, seed=3)).reshape(-1, 16)
    whitening = RegionWhitening().fit(train)
    from deepcluster.preprocess import l2_normalize
    z = whitening.pca_.transform(l2_normalize(train))
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(16), atol=1e-2)


@pytest.mark.parametrize("whiten", [False, True])
def test_descriptors_invariant_to_positive_scaling(whiten):
    maps = random_maps(seed=4)
    whitening = RegionWhitening().fit(rmac_from_maps(random_maps(n=30, seed=5))) if whiten else None
    a = rmac_descriptors(rmac_from_maps(maps), whitening)
    b = rmac_descriptors(rmac_from_maps(maps * 37.5), whitening)
    np.testing.assert_allclose(a, b, atol=1e-5)
