"""The methods over whole runs: DeepCluster-v2 keeps its projection and its bank across epochs and resumes exactly;
the cosine schedule sets each epoch's learning rate."""
import dataclasses

import numpy as np
import torch
from conftest import assert_resume_is_exact

from deepcluster import train
from deepcluster.checkpoint import load_checkpoint


def test_v2_keeps_its_head_and_resumes_exactly(tiny_config, tmp_path):
    a, b, straight = assert_resume_is_exact(
        dataclasses.replace(tiny_config, method="v2", epochs=3, proj_dim=8), tmp_path)
    assert torch.equal(a["bank"], b["bank"]) and a["bank"].shape == (36, 8)
    # the bank holds unit vectors, the prototypes are unit vectors, and they are the bank's k-means centroids
    assert torch.allclose(a["bank"].norm(dim=1), torch.ones(36), atol=1e-5)
    protos = a["model"]["head.prototypes"]
    assert protos.shape == (6, 8) and torch.allclose(protos.norm(dim=1), torch.ones(6), atol=1e-5)
    assert all(np.isfinite(r["loss"]) and r["clusters"] == 6 for r in straight["metrics"])


def test_v2_projection_persists_across_epochs(tiny_config, tmp_path, monkeypatch):
    """v1 re-initialises its head every epoch; v2 must not: epoch 2 starts from the projection epoch 1 learned."""
    from deepcluster.training import methods as t

    cfg = dataclasses.replace(tiny_config, method="v2", epochs=2, proj_dim=8)
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "one", quiet=True)
    after_one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]["head.projection.weight"]
    seen = []
    real = t.train_on_labels

    def spy(model, *a, **k):
        seen.append(model.head.projection.weight.detach().clone())
        return real(model, *a, **k)

    monkeypatch.setattr(t, "train_on_labels", spy)
    train(cfg, tmp_path / "two", quiet=True)
    assert len(seen) == 2 and torch.equal(seen[1], after_one) and not torch.equal(seen[0], seen[1])


def test_v2_centre_bank_is_the_centre_view_projection_of_the_previous_weights(tiny_config, tmp_path):
    """--bank centre: each epoch clusters a fresh centre-view, eval-mode pass, so the bank of epoch 2 is exactly
    the projection of the centre view by epoch 1's weights; resume stays exact."""
    from deepcluster.device import extraction_dtype
    from deepcluster.features import Reading, centre_view_features
    from deepcluster.network import restore_model
    from deepcluster.session import datasets, fresh_network
    from deepcluster.state import RunState

    cfg = dataclasses.replace(tiny_config, method="v2", bank="centre", epochs=2, proj_dim=8)
    a, _, _ = assert_resume_is_exact(cfg, tmp_path)
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "one", quiet=True)
    epoch1 = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    data = datasets(cfg)[0]
    model = fresh_network(cfg, data.channels, torch.device("cpu"))
    restore_model(model, RunState.load(tmp_path / "one"))
    with torch.no_grad():
        cpu = torch.device("cpu")  # epoch 2's pass is in the run's extraction precision (int8 on some CPUs)
        feats = torch.from_numpy(centre_view_features(
            model, data, cpu, Reading(amp=extraction_dtype(cfg, cpu, len(data)), desc=None)))
        expected = model.head.project(torch.relu(feats))
    assert torch.allclose(a["bank"], expected, atol=1e-5)
    # epoch 1's bank came from the initial weights, and training did not overwrite it with crop/dropout noise
    assert not torch.allclose(epoch1["bank"], expected, atol=1e-3)


def test_cosine_schedule_sets_each_epochs_lr_and_resumes_exactly(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, lr=0.04, lr_schedule="cosine", epochs=3)
    a, _, straight = assert_resume_is_exact(cfg, tmp_path)
    # half a cosine over 3 epochs: lr * (1 + cos(pi * (e - 1) / 3)) / 2 = 0.04, 0.03, 0.01
    np.testing.assert_allclose([r["lr"] for r in straight["metrics"]], [0.04, 0.03, 0.01], rtol=1e-12)
    assert all(abs(g["lr"] - 0.01) < 1e-12 for g in a["optimizer"]["param_groups"])
