"""What a filter responds to: the first layer's kernels in pixel space, images made by gradient ascent to excite
a filter (the paper's Fig. 3 and 4), and the dataset images that excite it most (its Fig. 5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..data import make_loader
from ..features import Reading, extract_features
from ..settings import ConfigError
from ..views import centre_input
from .grids import to_rgb


def check_conv_layer(model, layer: int) -> None:
    if not 1 <= layer <= model.n_conv:
        raise ConfigError(f"--layer {layer}: {model.arch} has conv layers 1 to {model.n_conv}")


def sample_filters(model, layer: int, count: int, seed: int = 0) -> list[int]:
    """``count`` filter indices of conv ``layer`` drawn at random (all of them when it has fewer), sorted."""
    check_conv_layer(model, layer)
    conv = [m for m in model.features if isinstance(m, nn.Conv2d)][layer - 1]
    n = conv.out_channels
    return sorted(np.random.default_rng(seed).choice(n, min(count, n), replace=False).tolist())


def first_layer_kernels(model) -> torch.Tensor:
    """The first conv layer's kernels as seen from the input pixels, ``(F, C, h, w)``. Without Sobel these are
    the weights; with it, grey + Sobel + conv1 is one linear map, and its kernel (2 px wider) is read off as the
    gradient of one output unit per filter with respect to an input away from the borders."""
    conv = next(m for m in model.features if isinstance(m, nn.Conv2d))
    w = conv.weight.detach().float().cpu()
    if model.sobel is None:
        return w
    k = conv.kernel_size[0]
    n_filters, channels = w.shape[0], model.sobel.gray.shape[1]
    x = torch.zeros(n_filters, channels, k + 4, k + 4, requires_grad=True)
    gray, edges = (b.detach().float().cpu() for b in (model.sobel.gray, model.sobel.edges))
    sobel = F.conv2d(F.conv2d(x, gray), edges, padding=1)
    y = F.conv2d(sobel, w)  # (F, F, 5, 5): output (2, 2) sees input rows/cols 1 .. k + 2
    y[torch.arange(n_filters), torch.arange(n_filters), 2, 2].sum().backward()
    return x.grad[:, :, 1:k + 3, 1:k + 3].clone()


def stretch(x: torch.Tensor, low: float = 1.0, high: float = 99.0) -> torch.Tensor:
    """Each ``(C, H, W)`` of a ``(B, C, H, W)`` float batch mapped to ``uint8``, its ``low``-``high`` percentile
    range stretched to 0-255 (kernels and synthetic images have no natural scale)."""
    flat = x.flatten(1).float()
    lo = torch.quantile(flat, low / 100, dim=1).view(-1, 1, 1, 1)
    hi = torch.quantile(flat, high / 100, dim=1).view(-1, 1, 1, 1)
    return ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1).mul(255).round().to(torch.uint8)


@dataclass(frozen=True)
class Ascent:
    """The gradient ascent's settings: ``steps`` Adam steps at ``lr`` with L2 decay ``weight_decay``, a Gaussian
    blur of ``blur_sigma`` every ``blur_every`` steps, random jitter of up to ``jitter`` px, seeded ``seed``."""
    steps: int = 200
    lr: float = 0.05
    weight_decay: float = 1e-4
    blur_every: int = 4
    blur_sigma: float = 0.5
    jitter: int = 1
    seed: int = 0


def gradient_ascent(model, layer: int, filters: Sequence[int], image_size: int, images, how: Ascent = Ascent(),
                    device="cpu") -> torch.Tensor:
    """Images that maximise the mean (pre-ReLU) activation of each of ``filters`` of conv ``layer``, found by
    gradient ascent from small noise with regularisers in the style of Yosinski et al. (2015) (``how``): L2 decay,
    a Gaussian blur every few steps, random jitter, and pixels kept in the valid range. ``images``: what the
    network reads (its ``channels``, ``mean`` and ``std``: a dataset, or :class:`~deepcluster.data.adapt.Format`).
    One batch holds every filter's image, so the cost is ``how.steps`` passes in all. Adam steps make one learning
    rate fit every layer. Returns ``uint8 (F, C, S, S)``, contrast-stretched."""
    import torchvision.transforms.functional as TF  # here: importing torchvision costs every report 1.5 s

    check_conv_layer(model, layer)
    device = torch.device(device)
    model.eval()
    gen, jitter = torch.Generator().manual_seed(how.seed), how.jitter
    m = torch.tensor(images.mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    s = torch.tensor(images.std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    x = (0.5 + 0.02 * torch.randn(len(filters), images.channels, image_size, image_size, generator=gen)).to(device)
    x = ((x - m) / s).requires_grad_()
    lo, hi = (0 - m) / s, (1 - m) / s
    opt = torch.optim.Adam([x], lr=how.lr, weight_decay=how.weight_decay)
    rows, cols = torch.arange(len(filters), device=device), torch.as_tensor(list(filters), device=device)
    for step in range(how.steps):
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
        a = model.conv_outputs(torch.roll(x, (dy, dx), (2, 3)), upto=layer, pre_relu=True)[-1]
        loss = -a[rows, cols].mean((1, 2)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            if how.blur_every and step % how.blur_every == 0:
                x.copy_(TF.gaussian_blur(x, [3, 3], [how.blur_sigma, how.blur_sigma]))
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return stretch((x.detach() * s + m).cpu())


def top_images(model, dataset, layer: int, filters: Sequence[int], image_size: int, n: int = 9,
               reading: Reading = Reading(), device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """For each filter of conv ``layer``, the ``n`` dataset images (centre view) with the highest mean
    activation, read in float32 with ``reading``'s batch size and workers. Returns ``(indices (F, n), activations
    (F, n))``, best first."""
    check_conv_layer(model, layer)
    model.eval()
    idx = torch.as_tensor(list(filters))
    forward = lambda x: model.conv_outputs(x, upto=layer)[-1][:, idx.to(x.device)].mean((2, 3))
    prep = centre_input(image_size, dataset.mean, dataset.std)
    loader = make_loader(dataset, range(len(dataset)), reading.batch_size, reading.workers)
    acts = extract_features(forward, loader, len(dataset), prep, torch.device(device), f"conv{layer} activations")
    best = np.argsort(-acts, axis=0, kind="stable")[:n].T
    return best, np.take_along_axis(acts.T, best, 1)


def tile_grid(images: torch.Tensor | Sequence, titles: Sequence[str] = (), cols: int = 8, cell: int = 64,
              title_h: int = 14) -> Image.Image:
    """A square-tiled grid of ``uint8 (C, H, W)`` images, each scaled to ``cell`` px, with a title above each."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    pad = 4
    h = title_h if titles else 0
    out = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad + h) + pad), "white")
    draw = ImageDraw.Draw(out)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (cell + pad), pad + r * (cell + pad + h)
        if titles:
            draw.text((x0, y0), titles[i], fill="black")
        tile = Image.fromarray(to_rgb(img))
        out.paste(tile.resize((cell, cell), Image.NEAREST if max(tile.size) < cell else Image.BILINEAR),
                  (x0, y0 + h))
    return out
