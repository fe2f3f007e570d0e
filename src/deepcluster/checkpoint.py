"""One save/load pair for checkpoints: written atomically, loaded without running any code from the file."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .config import ConfigError
from .rundir import atomic_write

FORMAT = "deepcluster/1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts of them) so that a crash leaves either the old
    file or the new one, never half of one."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_weights_only(path: str | Path, map_location="cpu"):
    """``torch.load`` that unpickles only tensors and plain data (``weights_only``), so a crafted file cannot run
    code; a missing, damaged or code-carrying file is one ConfigError line. Shared by our checkpoints and the
    reference implementation's."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist: check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"checkpoint {path} cannot be loaded safely ({first[:160]}): it is damaged or holds "
                          f"more than weights") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, weights only (see :func:`load_weights_only`)."""
    state = load_weights_only(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a deepcluster checkpoint (no '{FORMAT}' format tag)")
    return state
