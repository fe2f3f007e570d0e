"""The network DeepCluster trains: optional Sobel filter, conv body, fc block, and a classifier head that is
replaced by a fresh one every time the pseudo-labels change."""
from __future__ import annotations

import copy
import math
from typing import Optional

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
    trained) divided by a temperature. The projection persists across epochs; only the prototypes change."""

    def __init__(self, in_dim: int, dim: int, k: int, temperature: float):
        super().__init__()
        self.projection = nn.Linear(in_dim, dim)
        nn.init.normal_(self.projection.weight, 0.0, 0.01)
        nn.init.zeros_(self.projection.bias)
        self.register_buffer("prototypes", F.normalize(torch.randn(k, dim), dim=1))
        self.temperature = temperature

    @property
    def out_features(self) -> int:
        return self.prototypes.shape[0]

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` -> unit-norm ``(B, dim)``."""
        return F.normalize(self.projection(h), dim=1)

    def set_prototypes(self, centroids: torch.Tensor) -> None:
        self.prototypes = F.normalize(centroids.to(self.prototypes), dim=1)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Unit-norm projections ``(B, dim)`` -> logits ``(B, k)``: cosine to each prototype over the temperature."""
        return z @ self.prototypes.T / self.temperature

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scores(self.project(h))


class ClusterHeads(nn.Module):
    """Several fresh linear heads on the same features, one per clustering of them (the main k and the
    over-clustering ks: IIC's auxiliary heads, Ji et al. 2019; SeLa's several heads, Asano et al. 2020). Its
    logits are the heads' side by side, ``(B, sum(ks))``; :meth:`loss` splits them."""

    def __init__(self, in_dim: int, ks: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(in_dim, k) for k in ks)

    @property
    def out_features(self) -> list[int]:
        return [h.out_features for h in self.heads]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(h) for head in self.heads], 1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean over the heads of each one's cross-entropy; ``targets (B, heads)``, a column per head."""
        parts = logits.split(self.out_features, 1)
        return torch.stack([F.cross_entropy(p, targets[:, i]) for i, p in enumerate(parts)]).mean()


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

    def reset_head(self, n_classes: int | list[int]) -> nn.Module:
        """A fresh head ``feature_dim -> n_classes`` (weights N(0, 0.01), bias 0) on the model's device; with a
        list of sizes, one such head per size (:class:`ClusterHeads`)."""
        p = next(self.classifier.parameters())
        many = isinstance(n_classes, (list, tuple))
        head = ClusterHeads(self.feature_dim, list(n_classes)) if many else nn.Linear(self.feature_dim, n_classes)
        head = head.to(device=p.device, dtype=p.dtype)
        for m in head.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        self.head = head
        return head

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the head's logits against ``targets``: ``(B,)``, or ``(B, heads)`` for several."""
        if isinstance(self.head, ClusterHeads):
            return self.head.loss(logits, targets)
        return F.cross_entropy(logits, targets)

    def use_prototypes(self, k: int, dim: int, temperature: float) -> PrototypeHead:
        """Switch to DeepCluster-v2's persistent prototype head."""
        p = next(self.classifier.parameters())
        self.head = PrototypeHead(self.feature_dim, dim, k, temperature).to(device=p.device, dtype=p.dtype)
        return self.head

    def late_parameters(self) -> list[str]:
        """Names of the parameters of the last conv layer (its conv and BatchNorm) and of the fc block: what a
        soft reset (:func:`soft_reset`) shrinks towards a fresh initialisation."""
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        last = {f"features.{i}." for i in (convs[-1], convs[-1] + 1)}
        return [n for n, _ in self.named_parameters()
                if n.startswith("classifier.") or any(n.startswith(p) for p in last)]

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

    def inference_embed(self, conv_grid: Optional[int] = None, dtype: Optional[torch.dtype] = None
                        ) -> "FoldedEmbed":
        """:meth:`embed` in eval mode with every BatchNorm folded into its convolution (:func:`fold_batchnorm`):
        the same function, faster. A snapshot: made again after the weights change. With ``conv_grid``, each row
        also holds the last conv block's activations (after its ReLU, as :meth:`conv_outputs` gives them)
        average-pooled to ``conv_grid x conv_grid``: ``(B, feature_dim + C * conv_grid^2)``, fc first, from the
        same pass. ``dtype`` (bfloat16, float16): a copy of the weights in it, which the input is cast to, what
        autocast computes without casting the weights again at every batch (0.25 s of a bf16 pass over 800
        images with AlexNet on 2 CPU cores); the output is in ``dtype``."""
        return FoldedEmbed(self, conv_grid, dtype)

    def forward(self, x: torch.Tensor, with_projection: bool = False):
        """The head's logits; with ``with_projection`` (a prototype head), ``(logits, unit-norm projections)``:
        what DeepCluster-v2 keeps of its training pass for its memory bank."""
        h = F.relu(self.embed(x))
        if with_projection:
            z = self.head.project(h)
            return self.head.scores(z), z
        return self.head(h)


class FoldedEmbed(nn.Module):
    """:meth:`DeepClusterNet.inference_embed` as a module (one FX can trace and quantise): Sobel, the folded conv
    body up to the last ReLU, the rest of it, and the fc block, which is the network's own (shared, in eval mode).
    ``pool_first``: every ReLU followed by a max-pool is moved after it, save the last (2.0 s instead of 2.3 s for
    768 AlexNet images in bf16 on 2 CPU cores); the int8 network keeps each ReLU after its convolution, with
    which it is fused."""

    def __init__(self, model: DeepClusterNet, conv_grid: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                 pool_first: bool = True):
        super().__init__()
        layers = list(fold_batchnorm(model.features))
        last = max(i for i, m in enumerate(layers) if isinstance(m, nn.ReLU)) + 1
        if pool_first:  # max-pool then ReLU: the same values (ReLU is monotone), the ReLU on a quarter of them
            for i in range(last - 2):  # the last ReLU stays before its pool: the conv grid reads what it gives
                if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
                    layers[i], layers[i + 1] = layers[i + 1], layers[i]
        self.sobel, self.body, self.tail = model.sobel, nn.Sequential(*layers[:last]), nn.Sequential(*layers[last:])
        self.classifier, self.conv_grid, self.dtype = model.classifier.eval(), conv_grid, dtype
        if dtype is not None:  # copies: the network's own modules keep their weights
            for name in ("sobel", "body", "tail", "classifier"):
                setattr(self, name, copy.deepcopy(getattr(self, name)))
            self.to(dtype)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype) if self.dtype is not None else x
        x = self.sobel(x) if self.sobel is not None else x
        conv = self.body(x)
        fc = self.classifier(torch.flatten(self.tail(conv), 1))
        if self.conv_grid is None:
            return fc
        return torch.cat([fc, F.adaptive_avg_pool2d(conv, self.conv_grid).flatten(1)], 1)


@torch.no_grad()
def soft_reset(model: nn.Module, fresh: nn.Module, alpha: float, names: list[str]) -> None:
    """``theta <- alpha * theta + (1 - alpha) * phi`` for the parameters ``names`` of ``model``, with ``phi`` those
    of ``fresh``, a newly initialised network of the same shape: a partial step back towards initialisation that
    lets re-clustering leave a partition it has settled in (the soft reset of "Breaking the Reclustering
    Barrier", Miklautz et al., 2025; shrink-and-perturb, Ash & Adams, 2020)."""
    mine, theirs = dict(model.named_parameters()), dict(fresh.named_parameters())
    for n in names:
        mine[n].mul_(alpha).add_(theirs[n].to(mine[n]), alpha=1.0 - alpha)
