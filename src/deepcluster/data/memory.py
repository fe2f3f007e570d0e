"""Images held in memory as one tensor: the built-in dataset, and image folders once decoded."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class TensorImages(Dataset):
    """Images held in memory as one ``uint8`` tensor ``(N, C, S, S)``; batches are fetched with one index op."""

    def __init__(self, images: torch.Tensor, targets: Optional[np.ndarray] = None, classes: Sequence[str] = (),
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), name: str = "tensor"):
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[2] == images.shape[3]
        self.images, self.targets, self.classes = images, targets, tuple(classes)
        self.mean, self.std, self.name = tuple(mean), tuple(std), name

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def load_size(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i

    def __getitems__(self, indices: list[int]):
        # DataLoader calls this with a whole batch of indices: one gather instead of N item fetches.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], idx

    def take(self, indices) -> "TensorImages":
        """The images ``indices`` (in that order), with their labels."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        t = None if self.targets is None else np.asarray(self.targets)[idx.numpy()]
        return TensorImages(self.images[idx], t, self.classes, self.mean, self.std, self.name)
