"""The loader that batches ``(images, indices)`` in a given order of indices, and hands them over on a device."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, default_collate

from .memory import TensorImages
from .prepared import JpegBatch, PreparedImages


def _collate(batch):
    # TensorImages.__getitems__ already returns a batch; per-item datasets fall back to torch's collate.
    return batch if isinstance(batch, tuple) else default_collate(batch)


def decodes_on_device(dataset, device: Optional[torch.device]) -> bool:
    """Whether the passes over ``dataset`` on ``device`` decode its JPEGs there, in batches: a prepared folder
    whose ``decoding`` is ``device``, or ``auto`` on a CUDA device (nvJPEG takes a GPU's decoding off the
    CPUs, which set the pace of a GPU run; on a CPU run the loader's processes decode, in parallel)."""
    if device is None or not isinstance(dataset, PreparedImages):
        return False
    return dataset.decoding == "device" or (dataset.decoding == "auto" and device.type == "cuda")


def cores_per_process() -> int:
    """Cores of this process's share of the machine: torchrun's ``LOCAL_WORLD_SIZE`` processes share it."""
    return len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def auto_workers(dataset, device: Optional[torch.device] = None) -> int:
    """Loader processes when none are asked for: none for images already in memory (a batch is one index op) or
    on a machine without a CUDA GPU (the network's threads use every core, and decoding a JPEG costs a few
    percent of a CPU training step); two when the images are decoded on the device (the processes only slice
    memory-mapped shards); else, decoding being a GPU run's bottleneck, one per core of this process's share of
    the machine (torchrun's ``LOCAL_WORLD_SIZE`` processes share it), less one, at most 16 (each worker holds
    two batches in flight)."""
    if isinstance(dataset, TensorImages) or not torch.cuda.is_available():
        return 0
    if decodes_on_device(dataset, device):
        return 2
    return max(1, min(16, cores_per_process() - 1))


class DeviceBatches:
    """The batches ``(images uint8 (B, C, S, S) on device, indices (B,))`` of a loader: tensors copied to the
    device, JPEG batches decoded there."""

    def __init__(self, loader: DataLoader, device: torch.device, decoder: Optional[PreparedImages] = None):
        self.loader, self.device, self.decoder = loader, device, decoder

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, idx in self.loader:
            if isinstance(images, JpegBatch):
                yield self.decoder.decode(images, self.device), idx
            else:
                yield images.to(self.device, non_blocking=True), idx


def make_loader(dataset, indices: Sequence[int], batch_size: int, workers: Optional[int] = 0,
                pin_memory: bool = False, device: Optional[torch.device] = None):
    """Batches of ``(images uint8 (B, C, S, S), indices (B,))`` in the order of ``indices``, loaded by
    ``workers`` processes (None: :func:`auto_workers`). Given ``device``, the images come on it
    (:class:`DeviceBatches`), and a prepared folder's JPEGs are decoded there when :func:`decodes_on_device`."""
    on_device = decodes_on_device(dataset, device)
    workers = auto_workers(dataset, device) if workers is None else workers
    loader = DataLoader(dataset.reading_jpegs() if on_device else dataset, batch_size=batch_size,
                        sampler=list(indices), num_workers=workers, collate_fn=_collate, pin_memory=pin_memory,
                        persistent_workers=False)
    return loader if device is None else DeviceBatches(loader, device, dataset if on_device else None)
