"""The loader that batches ``(images, indices)`` in a given order of indices."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, default_collate

from .memory import TensorImages


def _collate(batch):
    # TensorImages.__getitems__ already returns a batch; per-item datasets fall back to torch's collate.
    return batch if isinstance(batch, tuple) else default_collate(batch)


def auto_workers(dataset) -> int:
    """Loader processes when none are asked for: none for images already in memory (a batch is one index op) or
    on a machine without a CUDA GPU (the network's threads use every core, and decoding a JPEG costs a few
    percent of a CPU training step); else, decoding being a GPU run's bottleneck, one per core of this process's
    share of the machine (torchrun's ``LOCAL_WORLD_SIZE`` processes share it), less one, at most 16 (each worker
    holds two batches in flight)."""
    if isinstance(dataset, TensorImages) or not torch.cuda.is_available():
        return 0
    cores = len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(16, cores - 1))


def make_loader(dataset, indices: Sequence[int], batch_size: int, workers: Optional[int] = 0,
                pin_memory: bool = False) -> DataLoader:
    """Batches of ``(images uint8 (B, C, S, S), indices (B,))`` in the order of ``indices``, loaded by
    ``workers`` processes (None: :func:`auto_workers`)."""
    workers = auto_workers(dataset) if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, sampler=list(indices), num_workers=workers,
                      collate_fn=_collate, pin_memory=pin_memory, persistent_workers=False)
