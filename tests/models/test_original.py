"""Importing the reference implementation's checkpoints: key names and layouts of facebookresearch/deepcluster,
built here from random weights, converted, and checked to compute exactly what the reference network computes."""
import pickle

import pytest
import torch
import torch.nn as nn

from deepcluster.checkpoint import load_checkpoint
from deepcluster.cli import main
from deepcluster.evaluate.protocols import load_for_eval
from deepcluster.models.original import convert_original


def reference_net(arch: str, sobel: bool = True, k: int = 50):
    """A network laid out as the reference's: ``sobel`` = Sequential(grey 1x1 conv, Sobel 3x3 conv), features
    wrapped in DataParallel (saved as ``features.module.N``), the classifier with its Linear layers where the
    reference has them (AlexNet: 1 and 4; VGG-16: 0 and 3), ``top_layer``."""
    from deepcluster.models.convnets import BUILDERS

    torch.manual_seed(0)
    features, _, _ = BUILDERS[arch](2 if sobel else 3, 224)
    flat = 256 * 6 * 6 if arch == "alexnet" else 512 * 7 * 7
    if arch == "alexnet":
        classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(flat, 4096), nn.ReLU(), nn.Dropout(0.5),
                                   nn.Linear(4096, 4096), nn.ReLU())
    else:
        classifier = nn.Sequential(nn.Linear(flat, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096),
                                   nn.ReLU())
    net = nn.Module()
    if sobel:
        grey = nn.Conv2d(3, 1, 1)
        grey.weight.data.fill_(1 / 3)
        grey.bias.data.zero_()
        edges = nn.Conv2d(1, 2, 3, padding=1)
        gx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
        edges.weight.data = torch.stack([gx, gx.t()]).unsqueeze(1)
        edges.bias.data.zero_()
        net.sobel = nn.Sequential(grey, edges)
    net.features = nn.DataParallel(features)
    net.classifier = classifier
    net.top_layer = nn.Linear(4096, k)
    for m in net.modules():  # non-trivial BatchNorm statistics, so that a mix-up would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    net.eval()

    def forward(x):
        x = net.sobel(x) if sobel else x
        h = net.classifier(torch.flatten(net.features(x), 1))
        return net.top_layer(h)
    # the reference's published files predate num_batches_tracked and hold no optimizer
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    return {"epoch": 400, "arch": arch, "state_dict": sd}, forward


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_imported_weights_compute_what_the_reference_computes(arch, tmp_path, image_folder, capsys):
    state, forward = reference_net(arch)
    src = tmp_path / "checkpoint.pth.tar"
    torch.save(state, src, _use_new_zipfile_serialization=False)  # the reference's era: the legacy format
    out = tmp_path / "imported.pt"
    assert main(["import-original", str(src), str(out)]) == 0
    assert f"{arch} + sobel, epoch 400, head of 50 clusters" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["arch"] == arch and ckpt["head_classes"] == 50
    setup = load_for_eval(out, data=str(image_folder), device="cpu")
    setup.model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(setup.model(x), forward(x), rtol=1e-4, atol=1e-4)
    assert main(["visualize", "filters", "--checkpoint", str(out), "--data", str(image_folder), "--layer", "1",
                 "--filters", "4", "--steps", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "filters-conv1.png").stat().st_size > 0
    # refusing to replace, and needing data for evaluation, are one-line errors
    assert main(["import-original", str(src), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["eval", "knn", "--checkpoint", str(out)]) == 2
    assert "no data given" in capsys.readouterr().err


def test_tampered_or_foreign_checkpoints_are_refused(tmp_path):
    state, _ = reference_net("alexnet", k=10)
    bad = dict(state, state_dict=dict(state["state_dict"]))
    bad["state_dict"]["sobel.1.weight"] = bad["state_dict"]["sobel.1.weight"] * 2
    with pytest.raises(Exception, match="not the fixed grey \\+ Sobel filter"):
        convert_original(bad)
    bad = dict(state, state_dict={k: v for k, v in state["state_dict"].items() if k != "top_layer.weight"})
    with pytest.raises(Exception, match="top_layer"):
        convert_original(bad)
    with pytest.raises(Exception, match="not a checkpoint of the reference"):
        convert_original({"model": {"layer.weight": torch.zeros(2)}})
    small = dict(state, state_dict=dict(state["state_dict"]))
    small["state_dict"]["classifier.1.weight"] = torch.zeros(4096, 100)
    with pytest.raises(Exception, match="wrong shapes"):
        convert_original(small)


def test_no_sobel_checkpoints_convert_too():
    state, _ = reference_net("alexnet", sobel=False, k=7)
    arch, sobel, sd, k = convert_original(state)
    assert (arch, sobel, k) == ("alexnet", False, 7) and sd["features.0.weight"].shape[1] == 3


class Payload:
    def __reduce__(self):
        import os
        return os.system, ("touch payload-ran",)


def test_a_crafted_reference_file_does_not_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "evil.pth.tar"
    with open(src, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    assert main(["import-original", str(src), str(tmp_path / "out.pt")]) == 2
    assert "cannot be loaded safely" in capsys.readouterr().err
    assert not (tmp_path / "payload-ran").exists() and not (tmp_path / "out.pt").exists()
