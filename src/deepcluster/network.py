"""The run's network: built at its seeded random initialisation from the config, and restored from a saved
:class:`~deepcluster.state.RunState` with the head it was saved with."""
from __future__ import annotations

import torch

from .models import DeepClusterNet, build_model
from .settings import ConfigError, ModelSettings
from .state import RunState


def make_model(learn: ModelSettings, image_size: int, seed: int, channels: int, device: torch.device
               ) -> DeepClusterNet:
    """The network ``learn`` names for ``channels``-channel images of ``image_size`` px at its random
    initialisation seeded ``seed``, channels-last (faster convolutions on CPU and GPU)."""
    torch.manual_seed(seed)
    model = build_model(learn.arch, channels, image_size, learn.sobel)
    return model.to(device, memory_format=torch.channels_last)


def restore_model(model: DeepClusterNet, state: RunState) -> None:
    """Give ``model`` the head ``state`` was saved with, then load its weights."""
    c = state.config
    if c.method == "v2" and not c.supervised:
        model.use_prototypes(state.head_classes, c.proj_dim, c.temperature)
    else:
        model.reset_head(state.head_classes)
    model.load_state_dict(state.model)
    model.to(memory_format=torch.channels_last)


def saved_network(state: RunState, image_size: int, channels: int, device: torch.device, source: str,
                  random_init: bool = False) -> DeepClusterNet:
    """The network of a saved run for ``channels``-channel images of ``image_size`` px (the run's, unless the
    caller's data says otherwise), with ``state``'s weights unless ``random_init`` (the "random" row of the
    tables: the same architecture and seed, untrained). Weights that do not fit are one ConfigError line."""
    cfg = state.config
    model = make_model(cfg.section("model"), image_size, cfg.seed, channels, device)
    if not random_init:
        try:
            restore_model(model, state)
        except RuntimeError:
            raise ConfigError(f"the weights in {source} do not fit the {cfg.arch} network for {channels}-channel "
                              f"{image_size} px images: give data like the run's training data (--data)") from None
    return model
