"""Filter pictures, cluster choices and the t-SNE map, checked against direct computations."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from deepcluster import train
from deepcluster.cli import main
from deepcluster.data.adapt import Format
from deepcluster.features import Reading
from deepcluster.models import build_model
from deepcluster.visualize import first_layer_kernels, gradient_ascent, pick_clusters, top_images, tsne_map
from deepcluster.visualize.filters import Ascent
from deepcluster.visualize.grids import to_rgb


def test_tsne_keeps_separated_blobs_apart_and_is_deterministic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    x = rng.normal(size=(4, 40))[labels] * 4 + rng.normal(size=(300, 40))
    y = tsne_map(x, iters=500)
    assert y.shape == (300, 2) and np.array_equal(y, tsne_map(x, iters=500))
    # every point's nearest neighbour on the map comes from its own blob
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.98


@pytest.mark.parametrize("sobel,channels", [(True, 3), (True, 1), (False, 3)])
def test_first_layer_kernels_reproduce_the_first_convolution(sobel, channels):
    torch.manual_seed(0)
    model = build_model("small", channels, 32, sobel=sobel).eval()
    k = first_layer_kernels(model)
    conv = model.features[0]
    x = torch.randn(1, channels, 32, 32)
    with torch.no_grad():
        y = conv(model.sobel(x) if sobel else x) - conv.bias.view(1, -1, 1, 1)
    h = k.shape[-1]
    for r, c in ((10, 10), (16, 20)):  # away from the borders, where zero padding breaks linearity
        patch = x[0, :, r - h // 2:r + h // 2 + 1, c - h // 2:c + h // 2 + 1]
        want = (k * patch).sum((1, 2, 3))
        torch.testing.assert_close(want, y[0, :, r, c], rtol=1e-4, atol=1e-4)
    assert k.shape == (32, channels, 7 if sobel else 5, 7 if sobel else 5)


def test_gradient_ascent_finds_images_each_filter_prefers():
    torch.manual_seed(0)
    model = build_model("small", 1, 28, sobel=True).eval()
    filters = [0, 5, 9, 17]
    imgs = gradient_ascent(model, 2, filters, 28, Format(1, (0.5,), (0.5,)), Ascent(60, seed=1))
    assert imgs.dtype == torch.uint8 and imgs.shape == (4, 1, 28, 28)
    x = (imgs.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        a = model.conv_outputs(x, upto=2, pre_relu=True)[-1][:, filters].mean((2, 3))  # a[i, j]: image i, filter j
    # each filter responds more to its own image than to the images made for the others
    assert (a.diagonal() > a.masked_fill(torch.eye(4, dtype=torch.bool), -1e9).max(0).values).all()


def test_top_images_are_the_most_activating(tensor_images):
    torch.manual_seed(0)
    model = build_model("small", 1, 28, sobel=False).eval()
    best, acts = top_images(model, tensor_images, 3, [1, 4, 7], 28, n=5, reading=Reading(16))
    x = (tensor_images.images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        a = model.conv_outputs(x, upto=3)[-1][:, [1, 4, 7]].mean((2, 3)).numpy()
    for j in range(3):
        np.testing.assert_allclose(acts[j], np.sort(a[:, j])[::-1][:5], rtol=1e-5)
        assert np.allclose(a[best[j], j], acts[j], rtol=1e-5)


def test_pick_clusters_by_size_and_purity():
    # cluster 0: 30 images, mixed; 1: 10 pure; 2: 8, 3/4 pure; 3: 6 pure; 4: 2 images (too small to rank)
    assignment = np.repeat([0, 1, 2, 3, 4], [30, 10, 8, 6, 2])
    targets = np.concatenate([np.arange(30) % 3, np.zeros(10), [1] * 6 + [2] * 2, np.ones(6), [0, 1]]).astype(int)
    groups = dict(pick_clusters(assignment, targets, per_group=1))
    # purest and most mixed choose first (a group is never left empty); the largest come from the rest
    assert groups == {"largest": [2], "purest": [1], "most mixed": [0]}
    groups = dict(pick_clusters(assignment, None, per_group=2))
    assert groups["largest"] == [0] and len(groups["random"]) == 1 and groups["random"][0] != 0


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_any_channel_count_becomes_rgb(channels):
    img = torch.randint(0, 255, (channels, 5, 7), dtype=torch.uint8)
    rgb = to_rgb(img)
    assert rgb.shape == (5, 7, 3) and np.array_equal(rgb[..., 0], img[0].numpy())


def test_visualize_commands_write_grids(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    train(dataclasses.replace(tiny_config, epochs=1, report=False), run, quiet=True)
    assert main(["visualize", "filters", "--run", str(run), "--layer", "2", "--filters", "10", "--steps", "20",
                 "--device", "cpu"]) == 0
    grid = Image.open(run / "filters-conv2.png")
    assert grid.size[0] > 8 * 64 and grid.size[1] > 2 * 64  # 10 images: 8 + 2 in two rows
    out = tmp_path / "top.png"
    assert main(["visualize", "top-images", "--checkpoint", str(run / "checkpoint.pt"), "--layer", "4",
                 "--filters", "3", "--top", "4", "--out", str(out), "--device", "cpu"]) == 0
    assert Image.open(out).size[1] == 3 * 66 + 2  # one row per filter
    assert "top-images of 3 conv4 filters" in capsys.readouterr().out
    assert main(["visualize", "filters", "--run", str(run), "--layer", "6", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--layer 6: small has conv layers 1 to 5" in err and err.count("\n") == 1
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_tensorboard_log_holds_the_epochs_and_the_evaluation(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    summary = train(dataclasses.replace(tiny_config, tensorboard=True, report=False), out, quiet=True)
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    loss = acc.Scalars("deepcluster/loss")
    assert [e.step for e in loss] == [1, 2]
    np.testing.assert_allclose([e.value for e in loss], [r["loss"] for r in summary["metrics"]], rtol=1e-6)
    assert [e.step for e in acc.Images("clusters")] == [1, 2]
    nmi = acc.Scalars("eval/trained L2/nmi")
    row = next(r for r in summary["eval"]["results"] if (r["features"], r["preprocessing"]) == ("trained", "L2"))
    assert nmi[0].step == 2 and abs(nmi[0].value - row["nmi"]) < 1e-6
