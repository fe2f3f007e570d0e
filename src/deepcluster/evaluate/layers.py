"""Which activations the protocols read, and how conv maps are pooled to comparable sizes."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data import make_loader
from ..features import Reading, extract_features
from ..settings import ConfigError
from ..views import centre_input


def probe_dims_default(image_size: int) -> int:
    """The paper pools AlexNet's conv maps to about 9,000 dims (224 px input). A 28-64 px network has maps of a
    few thousand values at most in its deep layers, so its target is 2,048."""
    return 9216 if image_size > 64 else 2048


def pool_grid(channels: int, spatial: int, target_dims: int) -> int:
    """Side s of the average-pooling grid so that ``channels * s * s`` is as close to ``target_dims`` as the map
    allows: s = round(sqrt(target / channels)), clamped to [1, spatial]."""
    return int(min(spatial, max(1, round(math.sqrt(target_dims / channels)))))


def pool(a: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C * grid * grid)`` by adaptive average pooling."""
    return F.adaptive_avg_pool2d(a, grid).flatten(1)


def layer_names(model) -> list[str]:
    return [f"conv{i}" for i in range(1, model.n_conv + 1)] + ["fc"]


def check_layer(model, layer: str) -> None:
    names = layer_names(model)
    if layer not in names:
        raise ConfigError(f"layer '{layer}' does not exist in {model.arch}: choose one of {', '.join(names)}")


def conv_shapes(model, channels: int, image_size: int, device) -> list[tuple[int, int, int]]:
    """``(C, H, W)`` of every conv layer's output for ``channels x image_size x image_size`` inputs."""
    was = model.training
    model.eval()
    with torch.no_grad():
        outs = model.conv_outputs(torch.zeros(1, channels, image_size, image_size, device=device))
    model.train(was)
    return [tuple(o.shape[1:]) for o in outs]


def conv_grids(shapes: list[tuple[int, int, int]], target_dims: int) -> list[int]:
    """The pooling grid of every conv layer (see :func:`pool_grid`)."""
    return [pool_grid(c, min(h, w), target_dims) for c, h, w in shapes]


def layer_features(model, dataset, layer: str, image_size: int, device, reading: Reading = Reading(desc=None),
                   target_dims: int | None = None) -> np.ndarray:
    """``(N, D)`` features of one layer (``conv<i>`` pooled by :func:`pool_grid`, or ``fc``, the fc output before
    its last ReLU) for the centre view of every image, in dataset order, read in float32 with ``reading``'s batch
    size, workers and progress label."""
    check_layer(model, layer)
    model.eval()
    if layer == "fc":
        forward = model.embed
    else:
        i = int(layer[4:])
        shapes = conv_shapes(model, dataset.channels, image_size, device)
        grid = conv_grids(shapes, target_dims or probe_dims_default(image_size))[i - 1]
        forward = lambda x: pool(model.conv_outputs(x, upto=i)[-1], grid)
    prep = centre_input(image_size, dataset.mean, dataset.std)
    loader = make_loader(dataset, range(len(dataset)), reading.batch_size, reading.workers)
    return extract_features(forward, loader, len(dataset), prep, torch.device(device), reading.desc)
