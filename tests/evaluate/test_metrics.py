import numpy as np
import pytest

from deepcluster.evaluate import hungarian_accuracy, imbalance_factor, nmi
from deepcluster.evaluate.knn import knn_accuracy, knn_predict


def test_hungarian_accuracy_of_a_permuted_labelling_is_one():
    y = np.random.default_rng(0).integers(0, 7, 500)
    perm = np.random.default_rng(1).permutation(7)
    assert hungarian_accuracy(y, perm[y]) == 1.0
    assert nmi(y, perm[y]) == pytest.approx(1.0)


def test_hungarian_accuracy_counts_the_best_matching():
    y = np.array([0, 0, 0, 1, 1, 1])
    c = np.array([5, 5, 9, 9, 9, 9])  # best: 5->0 (2 right), 9->1 (3 right)
    assert hungarian_accuracy(y, c) == pytest.approx(5 / 6)


def test_imbalance_factor():
    assert imbalance_factor(np.repeat(np.arange(4), 10)) == pytest.approx(1.0)
    assert imbalance_factor(np.zeros(40, int), k=4) == pytest.approx(4.0)


def test_knn_on_separated_classes_is_perfect_and_weighted_votes_matter():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 32)) * 4
    y = np.repeat(np.arange(5), 40)
    x = centers[y] + rng.standard_normal((200, 32)) * 0.3
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=10) == 1.0
    # one very close neighbour of class 1 outvotes two far ones of class 0 at a low temperature
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    pred = knn_predict(train, np.array([1, 0, 0]), np.array([[1.0, 0.05]]), k=3, temperature=0.05)
    assert pred.tolist() == [1]


def test_epoch_nmi_matrix_compares_every_two_epochs_on_one_sample():
    from deepcluster.evaluate.metrics import epoch_nmi_matrix, nmi

    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, 400)
    # each epoch moves a few more images than the last away from epoch 1's clusters
    clusters = {e: np.where(rng.random(400) < 0.05 * (e - 1), rng.integers(0, 5, 400), base) for e in range(1, 31)}
    epochs, m = epoch_nmi_matrix(clusters, most=6)
    assert epochs[0] == 1 and epochs[-1] == 30 and len(epochs) == 6  # evenly spaced, first and last kept
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1)
    assert m[1, 0] == nmi(clusters[epochs[1]], clusters[1]) and m[-1, 0] < m[1, 0]  # farther apart, less alike
    _, sampled = epoch_nmi_matrix(clusters, most=6, sample=300)
    assert np.abs(sampled - m).max() < 0.1 and not np.array_equal(sampled, m)


@pytest.mark.parametrize("na,nb,n", [(10, 10, 1000), (3, 50, 400), (1, 5, 30), (1, 1, 20), (7, 7, 1), (2, 2, 2)])
def test_nmi_and_ari_are_scikit_learns(na, nb, n):
    """Ours are written from the definitions (importing sklearn.metrics costs every command 0.6 s): the same
    values as scikit-learn's on random, dependent, identical and degenerate labellings."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from deepcluster.evaluate.metrics import ari

    rng = np.random.default_rng(na * 100 + nb)
    a = rng.integers(0, na, n) * 3 + 5  # labels need not start at 0 or be contiguous
    noisy = np.where(rng.random(n) < 0.3, rng.integers(0, nb, n), a % nb)
    for b in (rng.integers(0, nb, n), noisy, a, -a):
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
        assert ari(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
