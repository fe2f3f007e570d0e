"""The rules that make the loop DeepCluster, each checked where it can break: what a v1 epoch trains and with
which optimiser, where each clustering's randomness comes from, and which features are clustered."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deepcluster import train
from deepcluster.clustering import KMeans
from deepcluster.features import Reading, centre_view_features
from deepcluster.models import DeepClusterNet, build_model
from deepcluster.session import datasets
from deepcluster.training.sgd import SGD
from deepcluster.views import center_view


@pytest.fixture
def v1_config(tiny_config):
    return dataclasses.replace(tiny_config, epochs=3, report=False)


def test_every_v1_epoch_trains_a_fresh_head_with_its_own_optimiser_without_momentum_at_the_full_lr(
        v1_config, tmp_path, monkeypatch):
    heads, optimisers = [], []
    reset_head, sgd_init = DeepClusterNet.reset_head, SGD.__init__

    def record_head(self, n):
        head = reset_head(self, n)
        heads.append((head, [p.detach().clone() for p in head.parameters()]))
        return head

    def record_sgd(self, params, *args, **kwargs):
        sgd_init(self, params, *args, **kwargs)
        optimisers.append(self)

    monkeypatch.setattr(DeepClusterNet, "reset_head", record_head)
    monkeypatch.setattr(SGD, "__init__", record_sgd)
    cfg = dataclasses.replace(v1_config, lr_schedule="cosine")  # the body's lr decays; the heads' must not
    train(cfg, tmp_path / "run", quiet=True)

    assert len(heads) == v1_config.epochs  # one head per clustering
    assert len({id(h) for h, _ in heads}) == v1_config.epochs
    for _, (weight, bias) in heads:  # drawn afresh (N(0, 0.01), bias 0), not carried over from the last epoch
        assert abs(weight.std().item() - 0.01) < 0.002 and not bias.any()
    head_params = [{id(p) for p in h.parameters()} for h, _ in heads]
    in_opt = [{id(p) for g in o.param_groups for p in g["params"]} for o in optimisers]
    body = [o for o, ids in zip(optimisers, in_opt) if not any(ids & hp for hp in head_params)]
    assert len(body) == 1 and body[0].param_groups[0]["momentum"] == v1_config.momentum
    for hp in head_params:  # each head has one optimiser of its own, holding it alone, without momentum
        own = [o for o, ids in zip(optimisers, in_opt) if ids & hp]
        assert len(own) == 1 and {id(p) for g in own[0].param_groups for p in g["params"]} == hp
        assert all(g["momentum"] == 0 and g["lr"] == cfg.lr for g in own[0].param_groups)


def test_each_epoch_clusters_from_a_seed_of_its_own(v1_config, tmp_path, monkeypatch):
    seeds, fit = [], KMeans.fit

    def record(self, x):
        if self.n_clusters == v1_config.k:  # the training's clusterings, not the closing evaluation's
            seeds.append(self.seed)
        return fit(self, x)

    monkeypatch.setattr(KMeans, "fit", record)
    train(v1_config, tmp_path / "run", quiet=True)
    # one clustering per epoch, then the trained network's, which the run keeps: every one from its own seed
    assert len(seeds) == v1_config.epochs + 1 and len(set(seeds)) == v1_config.epochs + 1


def test_the_clustered_features_are_the_eval_mode_pre_relu_fc_output(tiny_config):
    torch.manual_seed(0)
    data = datasets(tiny_config)[0]
    model = build_model("small", data.channels, 32, sobel=True)
    model.train()
    with torch.no_grad():  # BatchNorm statistics away from their initial 0 / 1, so that folding them matters
        for _ in range(3):
            model.embed(torch.randn(16, data.channels, 32, 32) * 2 + 0.5)
    got = centre_view_features(model, data, torch.device("cpu"), Reading(desc=None))
    assert not model.training
    x = center_view(torch.stack([data[i][0] for i in range(len(data))]), 32, data.mean, data.std)
    with torch.no_grad():
        unfolded = model.embed(x).numpy()  # eval mode: running statistics, no dropout
    assert np.abs(got - unfolded).max() < 1e-5
    assert (got < 0).any()  # before the last ReLU
    with torch.no_grad():
        assert np.abs(got - torch.relu(model.embed(x)).numpy()).max() > 1e-3
