"""The extraction pass in int8 on CPUs: post-training static quantisation of the eval-mode network (BatchNorm
folded) with PyTorch's x86 backend in FX graph mode, calibrated on a fixed handful of the dataset's images.

Weights are quantised per output channel (symmetric int8), activations per tensor (uint8) from the min and max seen
on the calibration images. The Sobel filter stays in fp32 (two fixed kernels, a negligible share of the work), and
so do the pooled conv features joined to the fc ones.
Integer products accumulate exactly, so a batch's features do not depend on how the images were batched or split
between processes: only on the calibration images, which are the same on every process."""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ..device import int8_dot_products
from .net import DeepClusterNet, FoldedEmbed

CALIBRATION_IMAGES = 64
# The fc block is quantised for passes over this many images or more. Packing AlexNet's 58M fc weights into int8
# takes 1.1-1.5 s per quantisation (every epoch); the int8 fc then saves 0.22 ms an image over the fp32 one (0.268
# against 0.325 s a batch of 256, 2 cores): it pays back from about 5,500 images. The conv layers, whose weights are
# few and whose products are many, are quantised in every pass.
FC_INT8_FROM = 6000


def calibration_indices(n: int, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """``count`` dataset indices spread evenly over ``0..n-1`` (all when ``n`` is smaller): the same on every process
    and every epoch, and not all from the first class folder of a sorted folder listing."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.int64))


def _qconfig_mapping(reduce_range: bool):
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig, get_default_qconfig_mapping

    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=reduce_range),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                qscheme=torch.per_channel_symmetric))
    # fp32: the Sobel filter, and the join of the fc features with the pooled conv layer (their ranges differ)
    return get_default_qconfig_mapping("x86").set_global(qconfig).set_module_name("sobel", None).set_object_type(
        torch.cat, None)


def int8_embed(model: DeepClusterNet, calibration: torch.Tensor, conv_grid: Optional[int] = None,
               quantise_fc: bool = True) -> nn.Module:
    """:meth:`DeepClusterNet.inference_embed` (``conv_grid`` included) quantised to int8, its activation ranges
    taken from ``calibration`` (a batch of network inputs, on the CPU). A snapshot of the current weights.
    ``quantise_fc`` False keeps the fc block in fp32 (see :data:`FC_INT8_FROM`)."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantisation's deprecation notices; its kernels are the x86 ones
        # FX rewrites what it quantises: a copy, not the network's; each ReLU stays after its conv, fused with it
        folded = copy.deepcopy(FoldedEmbed(model, conv_grid, pool_first=False))
        x = calibration.clone()  # a normal tensor: the observers keep state across calls
        mapping = _qconfig_mapping(not int8_dot_products())
        if not quantise_fc:
            mapping = mapping.set_module_name("classifier", None)
        observed = prepare_fx(folded, mapping, (x,))
        observed(x)
        return convert_fx(observed).eval()
