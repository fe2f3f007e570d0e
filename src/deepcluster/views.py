"""The two views of a batch the network sees, computed for the whole batch at once on its device.

* centre view (feature extraction, evaluation): centre crop of the stored square, normalised;
* train view: random resized crop + horizontal flip (the paper's augmentation), normalised.

Both take ``uint8 (B, C, S, S)`` and return ``float32 (B, C, size, size)``. Doing the crop as one batched affine
``grid_sample`` keeps augmentation off the per-image Python path, on CPU and GPU alike.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def standardise_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Float pixels in [0, 255], ``(B, C, H, W)`` or ``(C, H, W)``, in place: scaled to [0, 1], then standardised
    per channel, as one multiply-add per value (``x / (255 std) - mean / std``). Returns ``x``."""
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return torch.addcmul(shift, x, scale, out=x)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 (B, C, H, W)`` or ``(C, H, W)`` -> float, scaled to [0, 1] then standardised per channel: a new
    tensor, in ``x``'s memory format."""
    return standardise_(x.to(torch.float32, copy=True), mean, std)


def center_view(x: torch.Tensor, size: int, mean, std, channels_last: bool = False) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop of ``uint8 (B, C, S, S)``, normalised; with ``channels_last``, in
    that memory format (laid out while still uint8: a quarter of the bytes to move)."""
    o = (x.shape[-1] - size) // 2
    x = x[..., o:o + size, o:o + size]
    return normalize(x.contiguous(memory_format=torch.channels_last) if channels_last else x, mean, std)


def centre_input(size: int, mean, std):
    """The network's input for the centre view of a batch: :func:`center_view`, then channels-last (the memory
    format the networks run in). Returns the function, as the extraction loops take it."""
    return lambda x: center_view(x, size, mean, std, channels_last=True)


def random_resized_crop_boxes(n: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                              generator: torch.Generator | None = None, tries: int = 10) -> torch.Tensor:
    """Crop boxes ``(n, 4)`` as (cx, cy, w, h) in units of the image side, drawn like torchvision's
    RandomResizedCrop: area fraction uniform in ``scale``, log aspect ratio uniform in ``ratio``, the first of
    ``tries`` draws that fits, else the largest centred box of a clamped ratio."""
    area = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    logr = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(logr)
    w, h = torch.sqrt(area * r), torch.sqrt(area / r)
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(n, dtype=torch.long))
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    fallback = ~ok.any(1)
    w = torch.where(fallback, torch.ones(n), w)
    h = torch.where(fallback, torch.ones(n), h)
    u = torch.rand(n, 2, generator=generator)
    cx = (w / 2) + u[:, 0] * (1 - w)
    cy = (h / 2) + u[:, 1] * (1 - h)
    return torch.stack([cx, cy, w, h], 1)


def train_view(x: torch.Tensor, size: int, mean, std, scale: float = 0.08, flip: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crop (area fraction in [scale, 1]) to ``size`` and a horizontal flip with p = 0.5.
    Random numbers are drawn on the CPU from ``generator`` so the result is reproducible on any device."""
    b = x.shape[0]
    box = random_resized_crop_boxes(b, (scale, 1.0), generator=generator)
    sx = box[:, 2]
    if flip:
        sx = sx * torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    # affine_grid works in [-1, 1] coordinates: the output grid maps onto the box
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = box[:, 0] * 2 - 1
    theta[:, 1, 1] = box[:, 3]
    theta[:, 1, 2] = box[:, 1] * 2 - 1
    theta = theta.to(x.device)
    grid = F.affine_grid(theta, (b, x.shape[1], size, size), align_corners=False)
    # Bilinear weights sum to 1 (border padding clamps, never pads with zeros), so standardising the crop equals
    # cropping the standardised image: done on the (smaller) crop, in place (1.5x faster at 256 -> 224 px)
    crop = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return standardise_(crop, mean, std)
