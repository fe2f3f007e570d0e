"""Linear probes on every conv layer of a frozen network (the paper's Table 1).

One pass of the frozen backbone feeds all the probes at once: each conv layer's map is average-pooled to about
the same number of values (:func:`~deepcluster.evaluate.layers.pool_grid`) and a BatchNorm-free linear classifier
is trained on it with SGD (momentum 0.9, weight decay 1e-4, cosine-decayed lr), the augmented view on the training
images and the centre view on the test images. The backbone, BatchNorm statistics included, is checked unchanged
afterwards.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data import make_loader
from ..views import center_view, train_view
from .layers import conv_grids, conv_shapes, pool, probe_dims_default


def sgd_cosine(params, lr: float, steps: int):
    """The evaluation's optimiser: SGD (momentum 0.9, weight decay 1e-4) with the lr cosine-decayed to 0 over
    ``steps`` steps. Returns ``(optimizer, scheduler)``; step both every batch."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def assert_backbone_unchanged(before: dict, model: nn.Module) -> None:
    """Raise if any parameter or buffer (BatchNorm running statistics included) differs from ``before``."""
    now = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, now[k])]
    if changed:
        raise RuntimeError(f"the frozen backbone changed during the probe ({', '.join(changed[:3])}...)")


def linear_probes(model, train_set, test_set, image_size: int, device, epochs: int = 10, lr: float = 0.01,
                  batch_size: int = 256, crop_scale: float = 0.08, target_dims: int | None = None,
                  seed: int = 0, workers: int | None = 0, progress: bool = True) -> dict:
    """Train one linear classifier per conv layer on ``train_set`` labels; return
    ``{"conv1": top-1 on test_set, ..., "dims": {"conv1": D1, ...}, "epochs": epochs}``."""
    device = torch.device(device)
    target_dims = target_dims or probe_dims_default(image_size)
    shapes = conv_shapes(model, train_set.channels, image_size, device)
    grids = conv_grids(shapes, target_dims)
    n_classes = int(max(train_set.targets.max(), test_set.targets.max())) + 1
    dims = [c * g * g for (c, _, _), g in zip(shapes, grids)]
    torch.manual_seed(seed)
    heads = nn.ModuleList(nn.Linear(d, n_classes) for d in dims).to(device)
    opt, sched = sgd_cosine(heads.parameters(), lr, epochs * math.ceil(len(train_set) / batch_size))
    before = snapshot(model)
    model.eval()  # BatchNorm uses (and keeps) its running statistics
    y_train = torch.as_tensor(train_set.targets, device=device)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def acts(x):
        with torch.no_grad():
            return [pool(a, g) for a, g in zip(model.conv_outputs(x.contiguous(memory_format=torch.channels_last)),
                                               grids)]

    for epoch in tqdm(range(epochs), desc="linear probes", unit="epoch", disable=None if progress else True,
                      leave=False):
        for images, idx in make_loader(train_set, rng.permutation(len(train_set)), batch_size, workers):
            x = train_view(images.to(device), image_size, train_set.mean, train_set.std, crop_scale, generator=gen)
            feats = acts(x)
            y = y_train[idx.to(device)]
            loss = sum(F.cross_entropy(h(f), y) for h, f in zip(heads, feats))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    correct = torch.zeros(len(heads))
    y_test = torch.as_tensor(test_set.targets, device=device)
    for images, idx in make_loader(test_set, range(len(test_set)), batch_size, workers):
        x = center_view(images.to(device), image_size, test_set.mean, test_set.std)
        with torch.no_grad():
            for i, (h, f) in enumerate(zip(heads, acts(x))):
                correct[i] += (h(f).argmax(1) == y_test[idx.to(device)]).sum().item()
    assert_backbone_unchanged(before, model)
    out = {f"conv{i + 1}": float(c) / len(test_set) for i, c in enumerate(correct)}
    out["dims"] = {f"conv{i + 1}": d for i, d in enumerate(dims)}
    out["epochs"] = epochs
    return out
