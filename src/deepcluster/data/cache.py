"""An image folder decoded once into memory when it fits: later passes read memory instead of files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .folder import ImageFolder
from .loader import cores_per_process, make_loader
from .memory import TensorImages
from .prepared import PreparedImages


def decoding_workers(n: int) -> int:
    """Processes that decode ``n`` images into memory: one per core of this process's share of the machine
    (torchrun's ``LOCAL_WORLD_SIZE`` processes share it), each with a batch of 256 images at least; none (the main
    process decodes) when that leaves fewer than two."""
    workers = min(cores_per_process(), n // 256)
    return workers if workers > 1 else 0


def available_memory(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> int:
    """Bytes the kernel can give this process without swapping: ``MemAvailable`` (free memory plus the page cache
    and the buffers it can drop), not ``MemFree`` (on a machine that has read a lot of files, a small part of
    it), and no more than the room left under the process's cgroup limit (a container's, a Slurm job's:
    ``memory.max`` less ``memory.current``, cgroup v2) when there is one. Where there is no ``/proc/meminfo``, the
    free pages."""
    room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open(meminfo) as f:
            room = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        limit = (Path(cgroup) / "memory.max").read_text().strip()
        if limit != "max":
            room = min(room, int(limit) - int((Path(cgroup) / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return room


def in_memory(dataset, budget_gb: float, workers: Optional[int] = None,
              desc: Optional[str] = "decoding images into memory"):
    """``dataset`` decoded once into a :class:`TensorImages` (same images, bytes for bytes, same labels and name)
    when it is an image folder (raw or prepared) whose decoded images take at most ``budget_gb`` GiB and under
    half the available memory; otherwise ``dataset`` itself. Every later pass then reads memory instead of
    decoding each file again: a small folder's epochs no longer pay JPEG decoding twice (extraction and
    training). ``workers`` None: :func:`decoding_workers`, as nothing else runs yet."""
    if not isinstance(dataset, (ImageFolder, PreparedImages)):
        return dataset
    n, s = len(dataset), dataset.load_size
    need = n * dataset.channels * s * s
    if need > budget_gb * 2 ** 30 or need > available_memory() / 2:
        return dataset
    from tqdm import tqdm

    workers = decoding_workers(n) if workers is None else workers
    # at least 8 batches a worker: with 2 workers and 800 images, batches of 256 left one decoding 512 of them
    size = max(16, min(256, -(-n // (8 * workers)))) if workers else 256
    images = torch.empty((n, dataset.channels, s, s), dtype=torch.uint8)
    for batch, idx in tqdm(make_loader(dataset, range(n), size, workers), desc=desc, leave=False, unit="batch",
                           disable=True if desc is None else None):  # None: quiet off a terminal
        images[idx] = batch
    return TensorImages(images, dataset.targets, dataset.classes, dataset.mean, dataset.std, dataset.name)
