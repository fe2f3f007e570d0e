"""One save/load pair for checkpoints: written atomically, loaded without running any code from the file."""
from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Callable, Optional

import torch

from .rundir import atomic_write
from .settings import ConfigError

FORMAT = "deepcluster/1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts of them) so that a crash leaves either the old
    file or the new one, never half of one."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


class BackgroundWriter:
    """One write at a time in a thread of its own: a checkpoint goes to disk (hundreds of MB for AlexNet with its
    momentum, then a flush) while the run goes on: with the next epoch when what is written is a copy
    (:meth:`~deepcluster.state.RunState.snapshot`), else only with work that reads the weights and does not change
    them (the final pass, the closing evaluation). An error of a write is raised by the next :meth:`submit`,
    :meth:`wait` or :meth:`check`, in the caller's thread."""

    def __init__(self):
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[Exception] = None

    def submit(self, write: Callable[[], None]) -> None:
        self.wait()  # writes land in the order they were asked for

        def run():
            try:
                write()
            except Exception as e:  # noqa: BLE001 - handed to the caller by wait()
                self._error = e

        # not a daemon: a run that stops for another reason still finishes the write it started
        self._thread = threading.Thread(target=run, name="checkpoint writer")
        self._thread.start()

    def join(self) -> None:
        """Wait for the write in flight, keeping its error for :meth:`wait` (for a caller already stopping on
        another error)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def check(self) -> None:
        """Raise the error of a write that has already ended in one; a write still in flight is not waited for."""
        if self._thread is None or not self._thread.is_alive():
            self.wait()

    def wait(self) -> None:
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def load_weights_only(path: str | Path, map_location="cpu"):
    """``torch.load`` that unpickles only tensors and plain data (``weights_only``), so a crafted file cannot run
    code; a missing, damaged or code-carrying file is one ConfigError line. Shared by our checkpoints and the
    reference implementation's."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist: check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        if "unsupported global" in str(e).lower():  # an object it would have to run code to build
            raise ConfigError(f"checkpoint {path} cannot be loaded safely: it holds objects besides tensors and "
                              f"plain data, which could run code when loaded; load only files you trust, by other "
                              f"means") from None
        raise ConfigError(f"checkpoint {path} cannot be loaded safely: it is damaged, cut short or not a PyTorch "
                          f"file; copy it again or point to another one") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, weights only (see :func:`load_weights_only`)."""
    state = load_weights_only(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a deepcluster checkpoint (no '{FORMAT}' format tag)")
    return state
