"""Images made into what a trained network takes: its number of channels and its normalisation."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch.utils.data import Dataset

LUMA = (299, 587, 114)  # ITU-R 601-2, the weights of PIL's convert("L")


class Format(NamedTuple):
    """What a network reads: images of ``channels`` channels, normalised by ``mean`` and ``std`` (a dataset's
    ``channels``, ``mean`` and ``std`` say the same)."""
    channels: int
    mean: tuple
    std: tuple


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """``uint8 (..., C, H, W)`` -> ``(..., channels, H, W)``: colour to grey by luma, grey repeated to colour."""
    c = images.shape[-3]
    if c == channels:
        return images
    if channels == 1 and c == 3:
        w = torch.tensor(LUMA, dtype=torch.int32).view(3, 1, 1)
        return ((images.to(torch.int32) * w).sum(-3, keepdim=True) + 500).div(1000, rounding_mode="floor").to(
            torch.uint8)
    if c == 1:
        return images.expand(*images.shape[:-3], channels, *images.shape[-2:]).contiguous()
    raise ValueError(f"cannot turn {c}-channel images into {channels}-channel ones")


class AsChannels(Dataset):
    """``dataset`` seen with ``channels`` channels and the normalisation ``mean`` / ``std`` of the network that
    reads it; every other attribute (files, labels, name) is the dataset's own."""

    def __init__(self, dataset, channels: int, mean: Sequence[float], std: Sequence[float]):
        self.dataset, self.channels, self.mean, self.std = dataset, channels, tuple(mean), tuple(std)

    def __getattr__(self, name):  # only called for what this class does not define
        if name == "dataset":  # not set yet (unpickling in a loader worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def take(self, indices) -> "AsChannels":
        """The images ``indices`` of the wrapped dataset, seen the same way."""
        return AsChannels(self.dataset.take(indices), self.channels, self.mean, self.std)

    def __getitem__(self, i: int):
        image, idx = self.dataset[i]
        return to_channels(image, self.channels), idx

    def __getitems__(self, indices: list[int]):
        if hasattr(self.dataset, "__getitems__"):
            images, idx = self.dataset.__getitems__(indices)
            return to_channels(images, self.channels), idx
        return [self[i] for i in indices]


def for_network(dataset, channels: int, mean: Sequence[float], std: Sequence[float]) -> tuple[object, str]:
    """``(dataset as the network reads it, a sentence saying what was converted, or "")``."""
    note = ""
    if dataset.channels != channels:
        what = "grey (luma)" if channels == 1 else f"{channels} channels (the grey channel repeated)"
        note = (f"the network takes {channels}-channel images: the {dataset.channels}-channel images of "
                f"{dataset.name} are converted to {what}")
    if dataset.channels == channels and tuple(dataset.mean) == tuple(mean) and tuple(dataset.std) == tuple(std):
        return dataset, note
    return AsChannels(dataset, channels, mean, std), note
