"""Open a saved run: its state, its config with the caller's data options, its network and its datasets. The one
way evaluation, the report, visualisation and the exports get at a finished (or running) run."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import Config, ConfigError
from .data import default_image_size, image_format, load_datasets, open_training_images
from .device import kept_dtype, named_dtype, resolve_device
from .features import Reading
from .network import make_model, saved_network
from .state import RunState, checkpoint_path


@dataclass
class SavedRun:
    """A run opened for use. ``state`` is None for a run directory that has no checkpoint yet (then ``model`` is
    None too); ``assignment`` is the run's last clustering of ``train_set``, when the network is its trained one."""

    cfg: Config
    state: Optional[RunState]
    model: Optional[torch.nn.Module]
    train_set: object
    test_set: object
    device: torch.device
    run_dir: Path
    random_init: bool = False
    channels: int = 3  # the images the network takes: channels and normalisation
    mean: tuple = ()
    std: tuple = ()

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The precision to extract in: the run's clustering's, so that images are placed as the run placed its
        own on any machine; for a run that did not record it, what the run would take here (``kept_dtype``)."""
        c = None if self.state is None else self.state.clustering
        if c is not None and c.precision is not None:
            return named_dtype(c.precision)
        return kept_dtype(self.cfg.section("runtime"), self.device)

    def reading(self, desc: Optional[str] = None) -> Reading:
        """How a command reads images through this run's network: the run's batch size and workers, in
        :attr:`dtype`, on this process alone, under a progress bar labelled ``desc`` (None: none)."""
        return Reading(self.cfg.batch_size, self.cfg.workers, self.dtype, desc, alone=True)

    @property
    def assignment(self) -> Optional[np.ndarray]:
        s = self.state
        return None if s is None or self.random_init or s.config.supervised else s.assignment


@dataclass(frozen=True)
class Images:
    """The images a saved run opens with: the run's own unless ``data`` / ``val_data`` / ``data_root`` say
    otherwise (``data`` alone drops the run's held-out split); ``whole``: every image, else the run's
    ``--subset`` (the images its assignment numbers); ``cache``: decoded into memory when they fit; ``load``
    False: none (what placing other images needs, without scanning the run's own)."""
    data: Optional[str] = None
    val_data: Optional[str] = None
    data_root: Optional[str] = None
    whole: bool = True
    cache: bool = True
    load: bool = True


def input_size(cfg: Config) -> int:
    """The input size of the network of ``cfg`` in pixels (see :func:`~deepcluster.data.default_image_size`)."""
    return default_image_size(cfg.section("data"), cfg.arch)


def with_init(cfg: Config) -> tuple[Config, Optional[RunState]]:
    """``cfg`` with the network of its ``--init`` weights (architecture, Sobel, input size: what it leaves unset
    is theirs, what it gives must be theirs), and those weights (None without ``--init``)."""
    if not cfg.init:
        return cfg, None
    init = RunState.from_weights(cfg.init)
    theirs = {"arch": init.config.arch, "sobel": init.config.sobel, "image_size": input_size(init.config)}
    for name, value in theirs.items():
        if getattr(cfg, name) is not None and getattr(cfg, name) != value:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(cfg, name)} does not fit the weights of "
                              f"{cfg.init} ({name} {value}): leave it out to take theirs")
    return replace(cfg, **theirs), init


def fresh_network(cfg: Config, channels: int, device: torch.device):
    """The network of ``cfg`` for ``channels``-channel images at its seeded random initialisation (the one a run of
    ``cfg`` starts from)."""
    return make_model(cfg.section("model"), input_size(cfg), cfg.seed, channels, device)


def training_images(cfg: Config):
    """The training images ``cfg`` names, opened but not decoded (what the recipe profiles)."""
    return open_training_images(cfg.section("data"), input_size(cfg), cfg.seed)


def datasets(cfg: Config, cache: bool = True, train=None):
    """``(train, val)``: the images ``cfg`` names (see :func:`~deepcluster.data.load_datasets`)."""
    return load_datasets(cfg.section("data"), cfg.section("runtime"), input_size(cfg), cache, train)


def open_run(path: str | Path, device: str = "auto", images: Images = Images(), random_init: bool = False,
             need_checkpoint: bool = True) -> SavedRun:
    """A run directory or a checkpoint file, opened on ``device`` with ``images`` (by default every image of the
    run's own data). ``random_init`` builds the same architecture and seed untrained. Without
    ``need_checkpoint`` a run directory that has only its ``config.yaml`` so far opens with no network."""
    path, data, val_data, data_root = Path(path), images.data, images.val_data, images.data_root
    ckpt = checkpoint_path(path)
    if ckpt.is_file() or need_checkpoint:
        state = RunState.load(ckpt)
        cfg = state.config
    elif (path / "config.yaml").is_file():
        state, cfg = None, Config.from_yaml(path / "config.yaml")
    else:
        raise ConfigError(f"{path} is not a run directory (no config.yaml): give a folder written by "
                          f"'deepcluster train'")
    over = {k: v for k, v in (("data", data), ("val_data", val_data), ("data_root", data_root)) if v is not None}
    if data is not None and val_data is None:
        over["val_data"] = None
    if images.whole:
        over["subset"] = None
    cfg = replace(cfg, device=device, **over).validate()
    train_set, test_set = datasets(cfg, cache=images.cache) if images.load else (None, None)
    channels, mean, std = image_format(cfg.data)
    if train_set is not None:
        channels, mean, std = train_set.channels, train_set.mean, train_set.std
    dev = resolve_device(device)
    model = None if state is None else saved_network(state, input_size(cfg), channels, dev, str(ckpt), random_init)
    return SavedRun(cfg, state, model, train_set, test_set, dev, ckpt.parent, random_init, channels, tuple(mean),
                    tuple(std))
