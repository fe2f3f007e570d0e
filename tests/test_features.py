import numpy as np
import torch

from deepcluster.data import make_loader
from deepcluster.features import extract_features
from deepcluster.models import build_model
from deepcluster.views import center_view


def test_features_are_in_dataset_order_under_any_loader_order(tensor_images):
    torch.manual_seed(0)
    model = build_model("small", 1, 28).eval()
    prep = lambda x: center_view(x, 28, tensor_images.mean, tensor_images.std)
    n = len(tensor_images)
    ordered = extract_features(model.embed, make_loader(tensor_images, range(n), 10), n, prep, torch.device("cpu"))
    perm = np.random.default_rng(0).permutation(n)
    shuffled = extract_features(model.embed, make_loader(tensor_images, perm, 7), n, prep, torch.device("cpu"))
    np.testing.assert_allclose(shuffled, ordered, rtol=1e-4, atol=1e-5)
    # and row i really is item i
    with torch.inference_mode():
        one = model.embed(prep(tensor_images.images[5:6])).numpy()
    np.testing.assert_allclose(ordered[5], one[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(ordered[5], ordered[6])


def test_a_missed_item_is_an_error(tensor_images):
    model = build_model("small", 1, 28).eval()
    prep = lambda x: center_view(x, 28, tensor_images.mean, tensor_images.std)
    try:
        extract_features(model.embed, make_loader(tensor_images, range(10), 4), 64, prep, torch.device("cpu"))
    except RuntimeError as e:
        assert "visited 10 of 64" in str(e)
    else:
        raise AssertionError("incomplete extraction went unnoticed")
