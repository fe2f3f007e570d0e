"""One pass of training on given labels: the augmented view, cross-entropy, SGD; the same for every method."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from .. import distributed as dist
from ..data import make_loader
from ..device import autocast
from ..models import DeepClusterNet
from ..settings import TrainingError
from ..views import train_view
from .schedule import epoch_seed


@dataclass(frozen=True)
class TrainPass:
    """How a training pass runs: seeded from ``seed`` (and the epoch), ``batch_size`` images a step read by
    ``workers`` loader processes, autocast to ``amp`` (None: float32), random crops of at least ``crop_scale`` of
    the image; ``lr`` is named when the loss diverges."""
    seed: int
    batch_size: int
    workers: Optional[int]
    amp: Optional[torch.dtype]
    crop_scale: float
    lr: float


def train_on_labels(model: DeepClusterNet, optimizers: list, dataset, indices: np.ndarray, targets: np.ndarray,
                    how: TrainPass, epoch: int, keep_projections: bool = False
                    ) -> tuple[float, Optional[tuple[np.ndarray, np.ndarray]]]:
    """One pass over ``indices`` (dataset indices; under torchrun this process's slice of them) with the
    augmented view and cross-entropy against ``targets[index]``, on the model's device, each of ``optimizers``
    (the body's; v1's fresh head has its own) stepped every batch. Returns the mean loss over all processes and,
    with ``keep_projections`` (a prototype head: v2), this process's ``(indices, unit-norm projections)`` of the
    pass, else None."""
    device = next(model.parameters()).device
    # Each process draws its own crops and dropout masks; rank 0's are those of a single-process run.
    rank_seed = epoch_seed(how.seed, epoch) + 7919 * dist.rank()
    gen = torch.Generator().manual_seed(rank_seed)
    if dist.rank():
        torch.manual_seed(rank_seed)
    y_all = torch.from_numpy(targets).to(device)
    loader = make_loader(dataset, dist.shard(indices), how.batch_size, how.workers, device.type == "cuda", device)
    model.train()
    # Wrapped afresh each epoch: v1 has a new head, and DDP's construction hands every process rank 0's weights.
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled() else model
    amp = how.amp
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # fp16 gradients underflow unscaled
    total, count, seen, projections = 0.0, 0, [], []
    bar = tqdm(loader, desc=f"epoch {epoch} train", leave=False, unit="batch",
               disable=None if dist.is_main() else True)  # None: quiet when the output is not a terminal
    for step, (images, idx) in enumerate(bar):
        x = train_view(images, model.image_size, dataset.mean, dataset.std,
                       how.crop_scale, generator=gen).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            if keep_projections:
                logits, z = net(x, with_projection=True)
                seen.append(idx.numpy())
                projections.append(z.detach().float().cpu().numpy())
            else:
                logits = net(x)
            loss = model.loss(logits, y_all[idx.to(device)])
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, batch {step}: lower the "
                                f"learning rate (--lr, now {how.lr}); the last checkpoint is kept as it was")
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        total += loss.item() * len(idx)
        count += len(idx)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{total / count:.3f}")
    # DDP hands out rank 0's buffers before each forward, but the last forward then updated every rank's
    # BatchNorm statistics with its own batch: take rank 0's, so that all ranks extract with one network (the
    # one rank 0 checkpoints, which a resumed run starts from).
    dist.broadcast_buffers(model)
    total, count = dist.all_sum([total, count])
    kept = (np.concatenate(seen), np.concatenate(projections)) if keep_projections and seen else None
    return total / max(count, 1), kept
