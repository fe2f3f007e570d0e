"""Where and in what precision the network runs: the device a ``--device`` setting names, and the autocast dtype
of a ``--precision`` setting there."""
from __future__ import annotations

from typing import Optional

import torch

from .config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cuda":  # under torchrun each process has its own GPU (distributed.setup picked it)
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a ``precision`` setting on ``device`` (None: full precision). "auto" is bf16 on CUDA
    GPUs that have it (fp16 on older ones) and full precision on CPUs, where bf16 convolutions are mostly slower."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AMP_DTYPES.get(precision)


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
