"""Model + dataset -> ``(N, D)`` features in dataset order, whatever order the loader visits them in."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm


@torch.inference_mode()
def extract_features(forward: Callable[[torch.Tensor], torch.Tensor], loader, n: int,
                     prepare: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                     desc: Optional[str] = "features") -> np.ndarray:
    """Run ``forward(prepare(images))`` over ``loader`` (batches of ``(images, indices)``) and return a float32
    array ``(n, D)`` whose row ``i`` belongs to dataset item ``i``. Rows are written by index, never by batch
    position, so any sampler order gives the same array. Every row must be visited exactly once."""
    out: Optional[np.ndarray] = None
    seen = np.zeros(n, dtype=bool)
    for images, idx in tqdm(loader, desc=desc, leave=False, disable=desc is None, unit="batch"):
        f = forward(prepare(images.to(device, non_blocking=True))).float().cpu().numpy()
        if out is None:
            out = np.empty((n, f.shape[1]), dtype=np.float32)
        idx = idx.numpy()
        out[idx] = f
        seen[idx] = True
    if out is None or not seen.all():
        raise RuntimeError(f"feature extraction visited {int(seen.sum())} of {n} items")
    return out
