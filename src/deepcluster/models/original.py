"""The reference implementation's published checkpoints (AlexNet and VGG-16 with BatchNorm and Sobel) converted
into ours, so that evaluation and visualisation work on the paper's own weights.

The reference saves ``{"epoch", "arch", "state_dict"[, "optimizer"]}`` with keys ``sobel.0.*`` (grey 1x1 conv),
``sobel.1.*`` (the two Sobel kernels), ``features.module.N.*`` (convs and BatchNorms under DataParallel),
``classifier.I.*`` (the two Linear layers of the fc block) and ``top_layer.*`` (the last head). Its feature
stacks list conv, BN, ReLU and pooling layers in the same order as ours, so feature indices carry over; the
Sobel filter is fixed in both and is checked, not copied.
"""
from __future__ import annotations

import re

import torch

from ..settings import ConfigError
from .net import DeepClusterNet

ARCHS = {"alexnet": "alexnet", "vgg16": "vgg16"}


def _clean(key: str) -> str:
    return key.replace("module.", "")  # DataParallel wrappers, at any depth


def convert_original(state: dict, source: str = "checkpoint") -> tuple[str, bool, dict, int]:
    """Reference checkpoint dict -> ``(arch, sobel, our state_dict, head classes)``; the weights are checked
    against the shapes of our network of that architecture at 224 px. Raises ConfigError on anything else."""
    sd = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(sd, dict) or not any(_clean(k).startswith("features.") for k in sd):
        raise ConfigError(f"{source} is not a checkpoint of the reference DeepCluster code (no 'features.*' weights "
                          f"in its state_dict)")
    sd = {_clean(k): v for k, v in sd.items()}
    arch = str(state.get("arch", "")).lower()
    n_convs = sum(1 for k, v in sd.items() if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
    arch = arch if arch in ARCHS else {5: "alexnet", 13: "vgg16"}.get(n_convs, "")
    if arch not in ARCHS:
        raise ConfigError(f"{source}: architecture '{state.get('arch')}' with {n_convs} convs is neither the "
                          f"reference's alexnet nor vgg16")
    sobel = "sobel.1.weight" in sd
    if sobel:
        _check_sobel(sd, source)
    linears = _linears(sd)
    if len(linears) != 2 or "top_layer.weight" not in sd:
        raise ConfigError(f"{source}: expected two Linear layers in 'classifier' and a 'top_layer', found "
                          f"classifier layers {linears}")
    ours = _features_and_fc(sd, linears)
    ours["head.weight"], ours["head.bias"] = sd["top_layer.weight"], sd["top_layer.bias"]
    head_classes = int(sd["top_layer.weight"].shape[0])

    model = DeepClusterNet(arch, 3, 224, sobel=sobel, n_classes=head_classes)
    want = model.state_dict()
    for k, v in want.items():
        if k.startswith("sobel."):
            ours[k] = v  # fixed buffers, checked above
        elif k.endswith("num_batches_tracked") and k not in ours:
            ours[k] = torch.zeros((), dtype=torch.long)  # older PyTorch did not save it
    missing = sorted(set(want) - set(ours))
    extra = sorted(set(ours) - set(want))
    wrong = [k for k in want if k in ours and tuple(ours[k].shape) != tuple(want[k].shape)]
    if missing or extra or wrong:
        raise ConfigError(f"{source} does not fit our {arch}: missing {missing[:3]}, unexpected {extra[:3]}, "
                          f"wrong shapes {wrong[:3]}")
    return arch, sobel, _copied(ours, want), head_classes


def _linears(sd: dict) -> list[int]:
    """The indices of the Linear layers in a state dict's ``classifier``, in order."""
    return sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"classifier\.(\d+)\.weight", k)))


def _features_and_fc(sd: dict, linears: list[int]) -> dict:
    """Their feature stack as it is (the same layers in the same order as ours) and their classifier's Linear
    layers ``linears`` as our fc block's two (Dropout, Linear, ReLU, Dropout, Linear)."""
    ours = {k: v for k, v in sd.items() if k.startswith("features.")}
    for theirs, mine in zip(linears, (1, 4)):
        for p in ("weight", "bias"):
            ours[f"classifier.{mine}.{p}"] = sd[f"classifier.{theirs}.{p}"]
    return ours


def _copied(ours: dict, want: dict) -> dict:
    """The weights of ``want``'s keys taken from ``ours``, copied, floating-point ones as float32."""
    return {k: ours[k].detach().clone().float() if ours[k].is_floating_point() else ours[k] for k in want}


def _check_sobel(sd: dict, source: str) -> None:
    gray, edges = sd["sobel.0.weight"].float(), sd["sobel.1.weight"].float()
    gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    ok = (gray.shape == (1, 3, 1, 1) and torch.allclose(gray, torch.full_like(gray, 1 / 3), atol=1e-4)
          and edges.shape == (2, 1, 3, 3) and torch.allclose(edges[:, 0], torch.stack([gx, gx.t()]), atol=1e-4))
    biases = [sd.get(f"sobel.{i}.bias") for i in (0, 1)]
    if not ok or any(b is not None and b.abs().max() > 1e-6 for b in biases):
        raise ConfigError(f"{source}: its Sobel layers are not the fixed grey + Sobel filter the paper uses")


def convert_torchvision(sd, source: str = "state dict") -> tuple[str, dict]:
    """A torchvision state dict of a network we have -> ``(arch, our state_dict without a head)``: the feature stack
    carries over by index (conv, BN, ReLU, pool in the same order), the classifier's first two Linear layers become
    our fc block's, its last (the 1,000 ImageNet classes) is dropped. torchvision's ``vgg16_bn`` fits our vgg16
    without Sobel; its AlexNet has no BatchNorm and other widths, so fits nothing of ours. Raises ConfigError."""
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()) or \
            not any(k.startswith("features.") for k in sd):
        raise ConfigError(f"{source} is neither a run of ours, a checkpoint of the reference DeepCluster code nor a "
                          f"state dict of a torchvision network (no 'features.*' weights)")
    ours = _features_and_fc(sd, _linears(sd)[:2])
    for arch in ARCHS:
        with torch.device("meta"):  # shapes only: nothing allocated
            want = {k: v for k, v in DeepClusterNet(arch, 3, 224, sobel=False).state_dict().items()
                    if not k.startswith(("head.", "sobel."))}
        if set(want) == set(ours) and all(tuple(ours[k].shape) == tuple(v.shape) for k, v in want.items()):
            return arch, _copied(ours, want)
    convs = sum(1 for k, v in ours.items() if v.ndim == 4)
    batchnorm = any(k.endswith("running_mean") for k in ours)
    raise ConfigError(f"{source}: a network of {convs} convs {'with' if batchnorm else 'without'} BatchNorm fits "
                      f"neither our alexnet nor our vgg16 (both with BatchNorm, at 224 px); torchvision's vgg16_bn "
                      f"does, its alexnet has no BatchNorm and other widths")
