import numpy as np
import torch

from deepcluster import TensorImages
from deepcluster.data import make_loader
from deepcluster.sampler import pseudo_labels, uniform_over_clusters


def zipf_labels(n=20000, k=50, seed=0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, k + 1) ** 1.2
    return rng.choice(k, n, p=p / p.sum())


def test_pseudo_labels_are_contiguous_and_drop_empty_clusters():
    labels, c = pseudo_labels(np.array([7, 7, 2, 9, 2]))
    assert c == 3 and labels.tolist() == [1, 1, 0, 2, 0]


def test_sample_is_flat_over_clusters_on_the_images_actually_loaded():
    labels = zipf_labels()
    sizes = np.bincount(labels)
    assert sizes.max() / sizes.min() > 50  # very unbalanced clusters
    idx = uniform_over_clusters(labels, len(labels), np.random.default_rng(1))
    assert len(idx) == len(labels)
    # Each "image" stores its own dataset index as pixel values, so we read back what the loader really loaded.
    n = len(labels)
    pix = torch.stack([torch.tensor([i % 256, i // 256], dtype=torch.uint8) for i in range(n)])
    ds = TensorImages(pix.view(n, 1, 1, 2).expand(n, 1, 2, 2).contiguous())
    loaded = []
    for images, index in make_loader(ds, idx, 512):
        decoded = images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()
        assert torch.equal(decoded, index)
        loaded.append(decoded.numpy())
    hist = np.bincount(labels[np.concatenate(loaded)], minlength=sizes.size)
    assert hist.max() - hist.min() <= 1  # 20000 / 50 = 400 each


def test_sample_draws_members_of_each_cluster_without_replacement_when_possible():
    labels = np.repeat(np.arange(4), [1000, 1000, 10, 10])
    idx = uniform_over_clusters(labels, 400, np.random.default_rng(0))
    for j in range(2):  # big clusters: 100 distinct members each
        drawn = idx[labels[idx] == j]
        assert len(drawn) == 100 and len(np.unique(drawn)) == 100
    small = idx[labels[idx] == 2]  # small cluster: 100 draws from 10 members, with replacement
    assert len(small) == 100 and set(small) == set(np.flatnonzero(labels == 2))


def test_sample_depends_on_the_rng_only():
    labels = zipf_labels(2000)
    a = uniform_over_clusters(labels, 2000, np.random.default_rng([31, 4]))
    b = uniform_over_clusters(labels, 2000, np.random.default_rng([31, 4]))
    c = uniform_over_clusters(labels, 2000, np.random.default_rng([31, 5]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
