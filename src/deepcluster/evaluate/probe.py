"""Linear probes on every conv layer of a frozen network (the paper's Table 1).

Each conv layer's map is average-pooled to about the same number of values
(:func:`~deepcluster.evaluate.layers.pool_grid`) and a BatchNorm-free linear classifier is trained on it with SGD
(momentum 0.9, weight decay 1e-4, cosine-decayed lr); the test images are read in their centre view. Two ways to
feed the training images:

- ``views="augmented"`` (the paper's): a random crop of every image at every epoch, one pass of the frozen
  backbone per batch feeding all the probes at once. Each epoch costs a pass of the network.
- ``views="centre"``: the centre view's pooled maps are computed once, standardised with the training images'
  mean and deviation (an affine change of the linear classifier's variables, which only speeds SGD up), and held
  in memory, so that the probes can be trained to convergence for the cost of one pass. A linear classifier on
  the pixels, pooled to the same size, is trained beside them: the floor a layer should beat.

``"auto"`` takes the centre views when they fit in :data:`CENTRE_VIEW_BYTES`. The backbone, BatchNorm statistics
included, is checked unchanged afterwards.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data import make_loader
from ..features import extract_features, iter_features
from ..views import centre_input
from .fit import FitOptions, fit_on_views, sgd_cosine
from .layers import conv_grids, conv_shapes, pool, pool_grid, probe_dims_default

VIEWS = ("auto", "centre", "augmented")
CENTRE_VIEW_BYTES = 4 << 30  # pooled maps of the training images that views="auto" holds in memory


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def assert_backbone_unchanged(before: dict, model: nn.Module) -> None:
    """Raise if any parameter or buffer (BatchNorm running statistics included) differs from ``before``."""
    now = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, now[k])]
    if changed:
        raise RuntimeError(f"the frozen backbone changed during the probe ({', '.join(changed[:3])}...)")


class _Heads(NamedTuple):
    """The probes' heads: each conv layer's pooling grid and its pooled width, the number of classes."""
    grids: list
    dims: list
    n_classes: int


def linear_probes(model, train_set, test_set, image_size: int, device, how: FitOptions = FitOptions(),
                  target_dims: int | None = None, views: str = "auto") -> dict:
    """Train one linear classifier per conv layer on ``train_set`` labels, as ``how`` says; return
    ``{"conv1": top-1 on test_set, ..., "dims": {"conv1": D1, ...}, "epochs": epochs, "views": ...}``, with
    ``"pixels"`` and the training images' top-1 (``"train"``) too for centre views."""
    if views not in VIEWS:
        raise ValueError(f"unknown probe views '{views}': choose one of {', '.join(VIEWS)}")
    device = torch.device(device)
    target_dims = target_dims or probe_dims_default(image_size)
    shapes = conv_shapes(model, train_set.channels, image_size, device)
    grids = conv_grids(shapes, target_dims)
    n_classes = int(max(train_set.targets.max(), test_set.targets.max())) + 1
    dims = [c * g * g for (c, _, _), g in zip(shapes, grids)]
    pixel_grid = pool_grid(train_set.channels, image_size, target_dims)  # the pixels pooled like the conv maps
    if views == "auto":
        pixel_dims = train_set.channels * pixel_grid ** 2
        views = "centre" if len(train_set) * (sum(dims) + pixel_dims) * 4 <= CENTRE_VIEW_BYTES else "augmented"
    before = snapshot(model)
    model.eval()  # BatchNorm uses (and keeps) its running statistics
    args = (model, train_set, test_set, image_size, device, _Heads(grids, dims, n_classes), how)
    out = _centre_probes(*args, pixel_grid) if views == "centre" else _augmented_probes(*args)
    assert_backbone_unchanged(before, model)
    out["dims"] = {f"conv{i + 1}": d for i, d in enumerate(dims)} | out.get("dims", {})
    out["epochs"], out["views"] = how.epochs, views
    return out


def _centre_probes(model, train_set, test_set, image_size, device, heads: _Heads, how: FitOptions,
                   pixel_grid: int) -> dict:
    (grids, dims, n_classes), batch_size, progress = heads, how.batch_size, how.progress
    names = ["pixels"] + [f"conv{i + 1}" for i in range(len(grids))]

    def forward(x):  # the pooled pixels, then every conv layer's pooled map, side by side
        return torch.cat([pool(x, pixel_grid)] + [pool(a, g) for a, g in zip(model.conv_outputs(x), grids)], 1)

    def centre_features(ds, split):
        loader = make_loader(ds, range(len(ds)), batch_size, how.workers)
        rows = extract_features(forward, loader, len(ds), centre_input(image_size, ds.mean, ds.std), device,
                                f"probe features ({split})" if progress else None)
        return torch.from_numpy(rows).to(device)

    x_train, x_test = centre_features(train_set, "train"), centre_features(test_set, "test")
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = (torch.as_tensor(ds.targets, dtype=torch.int64, device=device) for ds in (train_set, test_set))
    sizes = [train_set.channels * pixel_grid ** 2] + dims
    torch.manual_seed(how.seed)
    heads = nn.ModuleList(nn.Linear(d, n_classes) for d in sizes).to(device)
    opt, sched = sgd_cosine(heads.parameters(), how.lr, how.epochs * math.ceil(len(x_train) / batch_size))
    gen = torch.Generator().manual_seed(how.seed)
    logits = lambda x: [h(part) for h, part in zip(heads, x.split(sizes, 1))]
    for _ in tqdm(range(how.epochs), desc="linear probes", unit="epoch", disable=None if progress else True,
                  leave=False):
        for idx in torch.randperm(len(x_train), generator=gen).to(device).split(batch_size):
            loss = sum(F.cross_entropy(z, y_train[idx]) for z in logits(x_train[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    @torch.no_grad()
    def top1(x, y):
        correct = torch.zeros(len(sizes))
        for s in range(0, len(x), 4096):
            for j, z in enumerate(logits(x[s:s + 4096])):
                correct[j] += (z.argmax(1) == y[s:s + 4096]).sum().item()
        return {n: float(c) / len(x) for n, c in zip(names, correct)}

    return top1(x_test, y_test) | {"train": top1(x_train, y_train), "dims": {"pixels": sizes[0]}}


def _augmented_probes(model, train_set, test_set, image_size, device, heads: _Heads, how: FitOptions) -> dict:
    (grids, dims, n_classes) = heads
    torch.manual_seed(how.seed)
    heads = nn.ModuleList(nn.Linear(d, n_classes) for d in dims).to(device)

    def acts(x):  # every conv layer's pooled map, side by side
        with torch.no_grad():
            return torch.cat([pool(a, g) for a, g in zip(model.conv_outputs(x), grids)], 1)

    logits = lambda x: [h(part) for h, part in zip(heads, x.split(dims, 1))]
    fit_on_views(lambda x, y: sum(F.cross_entropy(z, y) for z in logits(acts(x))), heads.parameters(), train_set,
                 image_size, device, how, "linear probes")
    correct = np.zeros(len(heads))
    loader = make_loader(test_set, range(len(test_set)), how.batch_size, how.workers)
    prep = centre_input(image_size, test_set.mean, test_set.std)
    for idx, f in iter_features(acts, loader, prep, device):  # streamed: no (N, sum of dims) array
        y = test_set.targets[idx]
        with torch.no_grad():
            correct += [(z.argmax(1).cpu().numpy() == y).sum() for z in logits(torch.from_numpy(f).to(device))]
    return {f"conv{i + 1}": float(c) / len(test_set) for i, c in enumerate(correct)}
