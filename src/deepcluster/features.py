"""Model + images -> features in dataset order, whatever order the loader visits them in, on one process or
many, each batch optionally projected on the device as it is read (:mod:`deepcluster.space` projects into the
clustering space this way); and the run's cache of the features it reads more than once."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist
from .data import make_loader
from .device import autocast
from .models.quantized import FC_INT8_FROM, calibration_indices, int8_embed
from .views import centre_input

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Reading:
    """How images are read through a network: ``batch_size`` at a time with ``workers`` loader processes (None:
    the loader's choice), computing in ``amp`` (None: float32; ``torch.qint8``: the network quantised to int8),
    under a progress bar labelled ``desc`` (None: no bar). ``alone``: this process reads every image itself and no
    other is involved (work rank 0 alone does; else each process reads its share). ``conv_grid``: each row is
    followed by the last conv block's activations average-pooled to this grid (the closing evaluation's)."""
    batch_size: int = 256
    workers: Optional[int] = 0
    amp: Optional[torch.dtype] = None
    desc: Optional[str] = "features"
    alone: bool = False
    conv_grid: Optional[int] = None

    def called(self, desc: Optional[str]) -> "Reading":
        """The same reading under another progress label."""
        return replace(self, desc=desc)

@torch.inference_mode()
def iter_features(forward: Forward, loader, prepare: Forward, device: torch.device, desc: Optional[str] = None,
                  amp: Optional[torch.dtype] = None, project: Optional[Forward] = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices (B,), features (B, D) float32)`` for each batch ``(images, indices)`` of ``loader``:
    ``forward(prepare(images))`` under autocast ``amp``, then ``project`` in full precision on the device."""
    for images, idx in tqdm(loader, desc=desc, leave=False, disable=True if desc is None else None, unit="batch"):
        with autocast(device, amp):
            f = forward(prepare(images.to(device, non_blocking=True)))
        f = f.float()
        if project is not None:
            f = project(f)
        yield idx.numpy(), f.cpu().numpy()


def extract_features(forward: Forward, loader, n: int, prepare: Forward, device: torch.device,
                     desc: Optional[str] = "features", amp: Optional[torch.dtype] = None) -> np.ndarray:
    """Run ``forward(prepare(images))`` over ``loader`` (batches of ``(images, indices)``) and return a float32
    array ``(n, D)`` whose row ``i`` belongs to dataset item ``i``. Rows are written by index, never by batch
    position, so any sampler order gives the same array. Every row must be visited exactly once."""
    return _fill(iter_features(forward, loader, prepare, device, desc, amp), n, None, None)


def _fill(batches, n: int, positions: Optional[np.ndarray], out: Optional[np.ndarray]) -> np.ndarray:
    """Write every batch's rows into ``out (n, D)`` (made at the first batch when None): at the dataset index,
    or at its position in the sorted ``positions`` when given. Raises when not all ``n`` rows were written."""
    seen = 0
    for idx, f in batches:
        if out is None:
            out = np.empty((n, f.shape[1]), dtype=np.float32)
        if positions is not None:
            idx = np.searchsorted(positions, idx)
        out[idx] = f
        seen += len(idx)
    if out is None or seen != n:
        raise RuntimeError(f"feature extraction visited {seen} of {n} items")
    return out


def dataset_features(forward: Forward, dataset, indices: np.ndarray, prepare: Forward, device: torch.device,
                     reading: Reading = Reading(), project: Optional[Forward] = None,
                     out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Features of the dataset items ``indices`` (sorted, distinct), read as ``reading`` says: each process
    extracting its share (``indices[rank::world]``) unless ``reading.alone``. On rank 0: ``(M, D)`` with row ``j``
    for item ``indices[j]``, or, given ``out`` ``(N, D)``, ``out`` with rows ``indices`` filled (written in place:
    no second copy). None on other ranks."""
    indices = np.asarray(indices, dtype=np.int64)
    together = dist.enabled() and not reading.alone
    mine = indices[dist.rank()::dist.world_size()] if together else indices
    loader = make_loader(dataset, mine, reading.batch_size, reading.workers, device.type == "cuda", device)
    batches = iter_features(forward, loader, prepare, device, reading.desc if dist.is_main() else None,
                            reading.amp, project)
    if not together:
        return _fill(batches, len(indices), None if out is not None else indices, out)
    rows = _fill(batches, len(mine), mine, None) if len(mine) else None
    return dist.gather_rows(rows, mine, len(indices), out, positions=None if out is not None else indices)


Embedding = tuple[Forward, Forward, Optional[torch.dtype]]  # (prepare, forward, autocast dtype)


def centre_view_embedding(model, dataset, amp: Optional[torch.dtype] = None,
                          conv_grid: Optional[int] = None) -> Embedding:
    """What :func:`centre_view_features` runs: the centre-view input, the network's eval-mode forward
    (``model.inference_embed``: BatchNorm folded into the convolutions, weights in ``amp`` when it is bfloat16 or
    float16) and the autocast dtype (None: the forward computes in ``amp`` itself). ``amp``
    ``torch.qint8``: the network quantised to int8 (:func:`~deepcluster.models.quantized.int8_embed`; its fc
    block too for datasets of ``FC_INT8_FROM`` images or more), calibrated on the same few images on every process
    and every call, under no autocast."""
    prep = centre_input(model.image_size, dataset.mean, dataset.std)
    model.eval()
    if amp is not torch.qint8:
        return prep, model.inference_embed(conv_grid, amp), None
    cal = calibration_indices(len(dataset))
    calibration, _ = next(iter(make_loader(dataset, cal, len(cal))))
    return prep, int8_embed(model, prep(calibration), conv_grid, len(dataset) >= FC_INT8_FROM), None


def centre_view_features(model, dataset, device: torch.device, reading: Reading = Reading(),
                         indices: Optional[np.ndarray] = None, project: Optional[Forward] = None,
                         out: Optional[np.ndarray] = None, embedding: Optional[Embedding] = None
                         ) -> Optional[np.ndarray]:
    """The network's fc features (``model.embed`` in eval mode) of the centre view of ``indices`` (default:
    every image), as :func:`dataset_features` returns them; with ``reading.conv_grid``, followed in each row by
    the last conv block's pooled activations. ``reading.amp``, ``reading.conv_grid``: see
    :func:`centre_view_embedding`, or pass the ``embedding`` it made (an int8 network is then not quantised
    again)."""
    prep, forward, amp = embedding or centre_view_embedding(model, dataset, reading.amp, reading.conv_grid)
    indices = np.arange(len(dataset)) if indices is None else indices
    return dataset_features(forward, dataset, indices, prep, device, replace(reading, amp=amp), project, out)


def fc_and_conv(model, dataset, device: torch.device, reading: Reading
                ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(fc features, last conv block pooled to reading.conv_grid)`` of every image's centre view, from one pass:
    on rank 0, None on the others."""
    both = centre_view_features(model, dataset, device, reading)
    return None if both is None else (both[:, :model.feature_dim], both[:, model.feature_dim:])


@dataclass
class FeatureCache:
    """What a run reads more than once, read once: the closing evaluation's features of a split through a network
    (``"random-init"``, read by epoch 1's clustering pass; ``"trained"``, by the final clustering) are kept when
    the run asked for them (:meth:`want`): ``kept[(network, split)] = (fc, last conv[, clustering input])``, what
    :func:`fc_and_conv` returns followed by the fc features in the clustering space when it was fitted on all of
    them. The evaluation reads ``kept``; the run drops it (:meth:`clear`) once read. ``conv_grid``: the pooling of
    the last conv block the evaluation reads."""
    conv_grid: Optional[int] = None
    wanted: set = field(default_factory=set)
    kept: dict = field(default_factory=dict)

    def want(self, network: str, split) -> None:
        self.wanted.add((network, split))

    def wants(self, network: str, split) -> bool:
        return (network, split) in self.wanted

    def read(self, network: str, model, split, device: torch.device, reading: Reading):
        """Read ``split`` through ``model`` (the fc features and the last conv block), keep and return it."""
        self.kept[(network, split)] = got = fc_and_conv(model, split, device, replace(reading,
                                                                                      conv_grid=self.conv_grid))
        return got

    def add(self, network: str, split, clustering_input: np.ndarray) -> None:
        """Keep beside ``split``'s features the clustering input they gave (fitted on all of them)."""
        self.kept[(network, split)] = (*self.kept[(network, split)], clustering_input)

    def clear(self) -> None:
        self.kept.clear()
