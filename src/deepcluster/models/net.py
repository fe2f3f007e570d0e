"""The network DeepCluster trains: optional Sobel filter, conv body, fc block, and a classifier head that is
replaced by a fresh one every time the pseudo-labels change."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .convnets import BUILDERS
from .sobel import Sobel


def fold_batchnorm(layers: nn.Sequential) -> nn.Sequential:
    """A copy of ``layers`` for inference in which every Conv2d followed by a BatchNorm2d absorbs the BatchNorm's
    running statistics and affine map (``w * g / sqrt(var + eps)``, ``(b - mean) * g / sqrt(var + eps) + beta``)
    and the BatchNorm becomes an identity: the same eval-mode function, one pass over the activations fewer."""
    out, mods = [], list(layers)
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            scale = nxt.weight.detach() / torch.sqrt(nxt.running_var + nxt.eps)
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                             m.groups, bias=True).to(m.weight.device, m.weight.dtype)
            with torch.no_grad():
                conv.weight.copy_(m.weight * scale.view(-1, 1, 1, 1))
                bias = m.bias.detach() if m.bias is not None else torch.zeros_like(nxt.running_mean)
                conv.bias.copy_((bias - nxt.running_mean) * scale + nxt.bias.detach())
            out.append(conv.to(memory_format=torch.channels_last))
            i += 2
        else:
            out.append(m)
            i += 1
    return nn.Sequential(*out).eval()


class PrototypeHead(nn.Module):
    """DeepCluster-v2's head (Caron et al., SwAV paper, 2020): a linear projection to ``dim``, L2-normalised,
    scored by cosine against ``k`` prototypes (the k-means centroids of the previous epoch's projections, not
    trained) divided by a temperature. The projection persists across epochs; only the prototypes change.
    ``last_z`` keeps the latest normalised projections so the trainer can refresh its memory bank."""

    def __init__(self, in_dim: int, dim: int, k: int, temperature: float):
        super().__init__()
        self.projection = nn.Linear(in_dim, dim)
        nn.init.normal_(self.projection.weight, 0.0, 0.01)
        nn.init.zeros_(self.projection.bias)
        self.register_buffer("prototypes", F.normalize(torch.randn(k, dim), dim=1))
        self.temperature = temperature
        self.last_z: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.prototypes.shape[0]

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` -> unit-norm ``(B, dim)``."""
        return F.normalize(self.projection(h), dim=1)

    def set_prototypes(self, centroids: torch.Tensor) -> None:
        self.prototypes = F.normalize(centroids.to(self.prototypes), dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.project(h)
        self.last_z = z.detach()
        return z @ self.prototypes.T / self.temperature


class DeepClusterNet(nn.Module):
    def __init__(self, arch: str, in_channels: int, image_size: int, sobel: bool = True, n_classes: int = 1):
        super().__init__()
        self.arch, self.image_size = arch, image_size
        self.sobel = Sobel(in_channels) if sobel else None
        self.features, self.classifier, self.feature_dim = BUILDERS[arch](2 if sobel else in_channels, image_size)
        self.head = nn.Linear(self.feature_dim, n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference's initialisation: conv N(0, sqrt(2 / (kh * kw * out))), BN (1, 0), linear N(0, 0.01).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def reset_head(self, n_classes: int) -> nn.Linear:
        """A fresh head ``feature_dim -> n_classes`` (weights N(0, 0.01), bias 0) on the model's device."""
        p = next(self.classifier.parameters())
        head = nn.Linear(self.feature_dim, n_classes).to(device=p.device, dtype=p.dtype)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        self.head = head
        return head

    def use_prototypes(self, k: int, dim: int, temperature: float) -> PrototypeHead:
        """Switch to DeepCluster-v2's persistent prototype head."""
        p = next(self.classifier.parameters())
        self.head = PrototypeHead(self.feature_dim, dim, k, temperature).to(device=p.device, dtype=p.dtype)
        return self.head

    def body_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("head.")]

    def conv_body(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.sobel(x) if self.sobel is not None else x)

    @property
    def n_conv(self) -> int:
        return sum(isinstance(m, nn.Conv2d) for m in self.features)

    def conv_outputs(self, x: torch.Tensor, upto: int | None = None, pre_relu: bool = False) -> list[torch.Tensor]:
        """Activations after each conv block (conv, BN, ReLU), ``[conv1, ..., convL]``, each ``(B, C, H, W)``;
        stops after conv ``upto`` when given. ``pre_relu`` gives the BN outputs instead (what gradient ascent
        maximises: the ReLU would zero its gradient wherever a filter is off)."""
        x = self.sobel(x) if self.sobel is not None else x
        outs: list[torch.Tensor] = []
        for m in self.features:
            if isinstance(m, nn.ReLU):
                if pre_relu:
                    outs.append(x)
                x = F.relu(x)
                if not pre_relu:
                    outs.append(x)
                if upto is not None and len(outs) == upto:
                    break
            else:
                x = m(x)
        return outs

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, feature_dim)``: the fc output before its last ReLU, which DeepCluster
        clusters."""
        return self.classifier(torch.flatten(self.conv_body(x), 1))

    def inference_embed(self):
        """:meth:`embed` in eval mode with every BatchNorm folded into its convolution (:func:`fold_batchnorm`):
        the same function, faster. A snapshot: made again after the weights change."""
        features = fold_batchnorm(self.features)
        sobel, classifier = self.sobel, self.classifier.eval()

        def embed(x: torch.Tensor) -> torch.Tensor:
            return classifier(torch.flatten(features(sobel(x) if sobel is not None else x), 1))

        return embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.embed(x)))
