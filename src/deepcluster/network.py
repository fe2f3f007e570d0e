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


def start_from(model: DeepClusterNet, init: RunState, source: str) -> None:
    """Load the weights of ``init`` (``--init``) into ``model``, all but the head, which stays fresh; weights that
    do not fit are one ConfigError line."""
    # the head is new, and the fixed Sobel filter is the run's own (its grey weights follow the data's channels)
    body = {k: v for k, v in init.model.items() if not k.startswith(("head.", "sobel."))}
    want = {k: v for k, v in model.state_dict().items() if not k.startswith(("head.", "sobel."))}
    wrong = [k for k in want if k in body and tuple(body[k].shape) != tuple(want[k].shape)]
    missing, extra = sorted(set(want) - set(body)), sorted(set(body) - set(want))
    if "features.0.weight" in wrong:
        raise ConfigError(f"the weights of {source} take {body['features.0.weight'].shape[1]}-channel input and this "
                          f"run's network {want['features.0.weight'].shape[1]}-channel: give --sobel as they were "
                          f"trained, or data with their number of channels")
    if wrong or missing or extra:
        raise ConfigError(f"the weights of {source} do not fit this run's {model.arch} at {model.image_size} px "
                          f"(wrong shapes {wrong[:3]}, missing {missing[:3]}, unexpected {extra[:3]}): leave --arch "
                          f"and --image-size out to take theirs")
    model.load_state_dict(body, strict=False)
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
