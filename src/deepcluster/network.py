"""The run's network: built at its seeded random initialisation from the config, and restored from a checkpoint
with the head it was saved with."""
from __future__ import annotations

import torch

from .config import Config
from .data import default_image_size
from .models import DeepClusterNet, build_model


def make_model(cfg: Config, dataset, device: torch.device) -> DeepClusterNet:
    """The network at its seeded random initialisation, channels-last (faster convolutions on CPU and GPU)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, dataset.channels, default_image_size(cfg), cfg.sobel)
    return model.to(device, memory_format=torch.channels_last)


def restore_model(model: DeepClusterNet, ckpt: dict) -> None:
    """Give ``model`` the head the checkpoint was saved with, then load its weights."""
    c = ckpt["config"]
    if c.get("method", "v1") == "v2":
        model.use_prototypes(ckpt["head_classes"], c["proj_dim"], c["temperature"])
    else:
        model.reset_head(ckpt["head_classes"])
    model.load_state_dict(ckpt["model"])
    model.to(memory_format=torch.channels_last)
