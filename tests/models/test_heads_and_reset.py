"""Over-clustering heads, the soft reset and the passes between clusterings: each rule, and a run using them."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_resume_is_exact

from deepcluster.config import ConfigError
from deepcluster.models import build_model, soft_reset
from deepcluster.training import epoch_samples


def test_soft_reset_moves_only_the_late_layers_part_way_to_a_fresh_init():
    torch.manual_seed(0)
    model, fresh = build_model("small", 1, 28, sobel=True), build_model("small", 1, 28, sobel=True)
    names = model.late_parameters()
    # the fc block and the last conv + its BatchNorm; nothing earlier
    assert all(n.startswith(("classifier.", "features.14.", "features.15.")) for n in names)
    assert {"classifier.1.weight", "classifier.4.bias", "features.14.weight", "features.15.weight"} <= set(names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    soft_reset(model, fresh, 0.8, names)
    theirs = dict(fresh.named_parameters())
    for n, p in model.named_parameters():
        want = 0.8 * before[n] + 0.2 * theirs[n] if n in names else before[n]
        assert torch.allclose(p, want, atol=1e-7), n
    assert not torch.equal(model.classifier[1].weight, before["classifier.1.weight"])


def test_several_heads_give_the_mean_of_their_cross_entropies():
    torch.manual_seed(0)
    model = build_model("small", 1, 28, sobel=False)
    head = model.reset_head([3, 5])
    assert head.out_features == [3, 5] and all(h.weight.std() < 0.02 for h in head.heads)  # N(0, 0.01)
    logits = torch.randn(4, 8)
    y = torch.tensor([[0, 4], [1, 0], [2, 2], [0, 3]])
    want = (F.cross_entropy(logits[:, :3], y[:, 0]) + F.cross_entropy(logits[:, 3:], y[:, 1])) / 2
    assert torch.allclose(model.loss(logits, y), want)
    model.reset_head(3)  # one head: plain cross-entropy
    assert torch.allclose(model.loss(logits[:, :3], y[:, 0]), F.cross_entropy(logits[:, :3], y[:, 0]))


def test_reassign_sets_the_images_trained_between_two_clusterings(tiny_config):
    assert epoch_samples(tiny_config.reassign, 36) == 36
    assert epoch_samples(2.5, 36) == 90
    assert epoch_samples(0.01, 36) == 1


def test_a_run_with_over_clustering_heads_and_soft_resets_resumes_exactly(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, epochs=3, overcluster="8,12", reset_every=1, reassign=1.5)
    a, b, straight = assert_resume_is_exact(cfg, tmp_path)
    assert a["head_classes"] == [straight["metrics"][-1]["clusters"], 8, 12]
    assert a["assignment"].max() < 6  # the run's assignment is the main clustering's
    rows = straight["metrics"]
    assert len(rows) == 3 and all(r["clusters"] <= 6 for r in rows)
    assert all(r["heads"] == [r["clusters"], 8, 12] for r in rows)  # the loss's chance is over every head


def test_the_soft_reset_changes_the_run(tiny_config, tmp_path):
    from deepcluster import train

    plain = train(dataclasses.replace(tiny_config, epochs=2), tmp_path / "a", quiet=True)
    reset = train(dataclasses.replace(tiny_config, epochs=2, reset_every=1), tmp_path / "b", quiet=True)
    assert plain["metrics"][0]["loss"] == reset["metrics"][0]["loss"]  # epoch 1 is never reset
    assert plain["metrics"][1]["loss"] != reset["metrics"][1]["loss"]


@pytest.mark.parametrize("change,message", [
    ({"overcluster": "50,x"}, "give numbers of clusters separated by commas"),
    ({"overcluster": "1"}, "at least 2 clusters"),
    ({"overcluster": "20", "method": "v2"}, "--overcluster works with --method v1"),
    ({"overcluster": "100"}, "asks for more clusters than the 36 images"),
    ({"reset_every": -1}, "reset_every = -1"),
    ({"reset_alpha": 1.0}, "reset_alpha = 1.0"),
    ({"reassign": 0}, "reassign = 0"),
])
def test_bad_heads_reset_and_reassign_settings_are_refused(tiny_config, tmp_path, change, message):
    from deepcluster import train

    with pytest.raises(ConfigError, match=message):
        train(dataclasses.replace(tiny_config, **change), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
