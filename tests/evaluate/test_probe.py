import numpy as np
import pytest
import torch

from deepcluster import TensorImages
from deepcluster.evaluate.fit import FitOptions
from deepcluster.evaluate.layers import layer_features, pool_grid
from deepcluster.evaluate.probe import assert_backbone_unchanged, linear_probes, snapshot
from deepcluster.models import build_model


def brightness_classes(n, seed):
    """Class 0 dark, class 1 bright, with noise: linearly separable from any layer that keeps the mean."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    imgs = rng.integers(0, 60, (n, 1, 28, 28)) + 150 * y[:, None, None, None]
    return TensorImages(torch.from_numpy(imgs.astype(np.uint8)), y, ("dark", "bright"))


@pytest.mark.parametrize("views", ["augmented", "centre"])
def test_probe_on_separable_data_reaches_100_percent_and_leaves_the_backbone_alone(views):
    torch.manual_seed(0)
    model = build_model("small", 1, 28, sobel=False)
    before = snapshot(model)
    res = linear_probes(model, brightness_classes(512, 0), brightness_classes(256, 1), 28, "cpu",
                        FitOptions(3, lr=0.05, batch_size=64, crop_scale=0.5, progress=False), views=views)
    assert res["conv1"] >= 0.98 and res["views"] == views
    assert {f"conv{i}" for i in range(1, 6)} <= set(res["dims"])
    if views == "centre":  # the pixel floor and the fit on the training images come with it
        assert res["pixels"] >= 0.98 and res["train"]["conv1"] >= 0.98 and res["dims"]["pixels"] == 28 * 28
    assert_backbone_unchanged(before, model)  # no error: nothing moved, BN statistics included


def label_noise_classes(n, seed):
    """Labels that no feature predicts: a probe can only memorise them."""
    imgs = torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (n, 1, 28, 28)).astype(np.uint8))
    return TensorImages(imgs, np.random.default_rng(seed + 1).integers(0, 2, n), ("a", "b"))


def test_centre_probe_trains_on_the_training_images_only():
    """Random labels: a probe fitted on the training images scores near chance on other images. Scoring the
    probe on its own training images (or fitting on the test ones) would read near 100 %."""
    torch.manual_seed(0)
    model = build_model("small", 1, 28, sobel=False)
    res = linear_probes(model, label_noise_classes(512, 0), label_noise_classes(512, 5), 28, "cpu",
                        FitOptions(30, lr=0.05, batch_size=64, progress=False), views="centre")
    assert res["train"]["conv1"] > 0.9  # 2,048 dims memorise 512 labels
    assert 0.35 < res["conv1"] < 0.65


def test_auto_views_hold_small_data_in_memory():
    model = build_model("small", 1, 28, sobel=False)
    res = linear_probes(model, brightness_classes(64, 0), brightness_classes(32, 1), 28, "cpu",
                        FitOptions(1, progress=False))
    assert res["views"] == "centre"


def test_backbone_check_catches_updated_batchnorm_statistics():
    model = build_model("small", 1, 28)
    before = snapshot(model)
    model.train()
    with torch.no_grad():
        model.embed(torch.randn(8, 1, 28, 28))  # a train-mode forward updates BN running means
    with pytest.raises(RuntimeError, match="running_mean"):
        assert_backbone_unchanged(before, model)


def test_pool_grid_gives_comparable_sizes():
    assert pool_grid(32, 28, 2048) == 8 and pool_grid(64, 7, 2048) == 6 and pool_grid(512, 2, 9216) == 2
    # AlexNet-like conv5 (256 x 13 x 13) pooled toward 9,216 values: a 6x6 grid
    assert pool_grid(256, 13, 9216) == 6


def test_layer_features_shapes(tensor_images):
    model = build_model("small", 1, 28)
    f = layer_features(model, tensor_images, "conv2", 28, "cpu", target_dims=2048)
    assert f.shape == (64, 64 * 6 * 6)
    assert layer_features(model, tensor_images, "fc", 28, "cpu").shape == (64, 512)
