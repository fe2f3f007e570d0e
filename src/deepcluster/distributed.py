"""Training on several processes under ``torchrun``, invisible when off.

Every helper gives the one-process answer when no process group exists, so the training loop reads the same
alone and under ``torchrun --nproc_per_node=G [--nnodes=...] -m deepcluster train ...``. The scheme (the
facts of DINO's and the reference's distributed feature extraction, written here):

- every process extracts the features of its shard of the images; rows travel with their dataset indices and are
  written by index on rank 0, so the array is in dataset order whatever the shards are;
- rank 0 clusters and broadcasts the assignment; every process then draws the same sample list from
  ``(seed, epoch)`` and trains on its own slice of it (:func:`shard`), gradients averaged by DDP;
- rank 0 alone writes files; :func:`on_main` runs a step there and re-raises its error on every rank.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

# Rank 0 clusters (and writes the report) while the others wait at the next collective: give it hours, not the
# default minutes, before a wait counts as a hang (k-means with k = 10,000 on ImageNet takes a while on CPUs).
TIMEOUT = datetime.timedelta(hours=3)


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1): NCCL when the
    processes use CUDA GPUs (each takes GPU ``LOCAL_RANK``), gloo on CPUs. Without ``torchrun``, with one
    process, or when the caller already made a group, nothing happens. Returns whether it joined one."""
    if enabled() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return True


def teardown(wait: bool = True) -> None:
    """Leave the process group. With ``wait`` (a run that ended well) every rank first waits for the others, so
    none exits while rank 0 still evaluates and writes the run: torchrun stops all processes when one exits
    abnormally, and a rank that left early could take rank 0's unfinished files down with it. After an error
    there is nothing to wait for (the other ranks may never arrive)."""
    if enabled():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective tensors live: the process's GPU for NCCL, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if enabled():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (pickled; for labels, configs and small state)."""
    if not enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def on_main(fn: Callable[[], Any], share: Optional[Callable[[Any], Any]] = None) -> Any:
    """Run ``fn`` on rank 0 and give its result to every rank (``share(result)`` to the other ranks, when given:
    rank 0 keeps what they do not need); if it raises, every rank raises the same error, so a refusal on rank 0
    (a run directory in the way, a bad checkpoint) stops all processes with one message."""
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    shared = share(result) if share is not None and enabled() and is_main() and error is None else result
    sent, error = broadcast_object((shared, error))
    if error is not None:
        error.on_every_rank = True  # so each rank may report it before any leaves the group (cli.main)
        raise error
    return result if is_main() else sent


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers of ``module`` (BatchNorm running statistics), in place."""
    if enabled():
        for b in module.buffers():
            dist.broadcast(b.data, src)


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not enabled():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def shard(indices: np.ndarray) -> np.ndarray:
    """This process's slice of a list that every process holds alike: items ``rank, rank + W, ...``. The list
    is first padded to a multiple of ``W`` with its own first items, so that every process gets the same number
    of items (DDP needs equal steps); the slices of all ranks interleaved give back the list plus that padding."""
    w = world_size()
    if w == 1:
        return np.asarray(indices)
    indices = np.asarray(indices)
    pad = (-len(indices)) % w
    if pad:
        indices = np.concatenate([indices, indices[:pad]])
    return indices[rank()::w]


def gather_rows(rows: Optional[np.ndarray], idx: np.ndarray, n: int, out: Optional[np.ndarray] = None,
                positions: Optional[np.ndarray] = None, chunk: int = 32768) -> Optional[np.ndarray]:
    """Assemble ``(n, D)`` on rank 0 from every rank's ``rows (m_r, D)`` (None when ``m_r`` is 0) for items
    ``idx (m_r,)``: the row of item ``i`` goes to row ``i``, or, given the sorted item list ``positions``, to
    the row where ``i`` stands in it. Written into ``out`` when given (rank 0), else into a new array; other
    ranks get ``None``. Sent in chunks of ``chunk`` rows, so the communication buffers stay small next to the
    result."""
    idx = np.asarray(idx, dtype=np.int64)
    where = (lambda i: i) if positions is None else (lambda i: np.searchsorted(positions, i))
    if not enabled():
        out = np.empty((n, rows.shape[1]), dtype=np.float32) if out is None else out
        out[where(idx)] = rows
        return out
    dev, w = _comm_device(), world_size()
    # Every rank learns every rank's row count and the width (a rank with no rows still sends a width of -1).
    meta = torch.tensor([len(idx), rows.shape[1] if rows is not None and len(idx) else -1], device=dev)
    metas = [torch.zeros_like(meta) for _ in range(w)]
    dist.all_gather(metas, meta)
    most = max(int(m[0]) for m in metas)
    d = max(int(m[1]) for m in metas)
    if is_main() and out is None:
        out = np.empty((n, d), dtype=np.float32)
    for start in range(0, most, chunk):
        size = min(chunk, most - start)
        # Padded to the same size on every rank (collectives need equal shapes); index -1 marks padding.
        buf = torch.full((size, d + 1), -1.0, dtype=torch.float64, device=dev)
        mine = slice(start, min(start + size, len(idx)))
        m = max(0, mine.stop - mine.start)
        if m > 0:
            buf[:m, 0] = torch.from_numpy(idx[mine]).to(dev, torch.float64)
            buf[:m, 1:] = torch.from_numpy(np.ascontiguousarray(rows[mine])).to(dev, torch.float64)
        bufs = [torch.empty_like(buf) for _ in range(w)] if is_main() else None
        dist.gather(buf, bufs, dst=0)
        if is_main():
            for b in bufs:
                b = b[b[:, 0] >= 0].cpu().numpy()
                out[where(b[:, 0].astype(np.int64))] = b[:, 1:]
    return out if is_main() else None
