"""Model + images -> features in dataset order, whatever order the loader visits them in, on one process or
many; and the clustering input (PCA-whitened, L2-normalised features) projected while extracting, so that the
clustering stage holds ``N x pca_dim`` floats, never ``N x D``."""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed as dist
from .data import make_loader
from .device import autocast
from .models.quantized import FC_INT8_FROM, calibration_indices, int8_embed
from .preprocess import PCAWhitening, l2_normalize
from .views import centre_input

Forward = Callable[[torch.Tensor], torch.Tensor]

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
                     batch_size: int, workers: int | None = 0, desc: Optional[str] = "features",
                     amp: Optional[torch.dtype] = None, project: Optional[Forward] = None,
                     out: Optional[np.ndarray] = None, alone: bool = False) -> Optional[np.ndarray]:
    """Features of the dataset items ``indices`` (sorted, distinct), each process extracting its share
    (``indices[rank::world]``). On rank 0: ``(M, D)`` with row ``j`` for item ``indices[j]``, or, given ``out``
    ``(N, D)``, ``out`` with rows ``indices`` filled (written in place: no second copy). None on other ranks.
    ``alone``: this process extracts every item itself and no other is involved (work rank 0 alone does)."""
    indices = np.asarray(indices, dtype=np.int64)
    together = dist.enabled() and not alone
    mine = indices[dist.rank()::dist.world_size()] if together else indices
    loader = make_loader(dataset, mine, batch_size, workers, device.type == "cuda", device)
    batches = iter_features(forward, loader, prepare, device, desc if dist.is_main() else None, amp, project)
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


def centre_view_features(model, dataset, device: torch.device, batch_size: int = 256, workers: Optional[int] = 0,
                         amp: Optional[torch.dtype] = None, indices: Optional[np.ndarray] = None,
                         project: Optional[Forward] = None, out: Optional[np.ndarray] = None,
                         desc: Optional[str] = "features", alone: bool = False, conv_grid: Optional[int] = None,
                         embedding: Optional[Embedding] = None) -> Optional[np.ndarray]:
    """The network's fc features (``model.embed`` in eval mode) of the centre view of ``indices`` (default:
    every image), as :func:`dataset_features` returns them; with ``conv_grid``, followed in each row by the last
    conv block's pooled activations. ``amp``, ``conv_grid``: see :func:`centre_view_embedding`, or pass the
    ``embedding`` it made (an int8 network is then not quantised again)."""
    prep, forward, amp = embedding or centre_view_embedding(model, dataset, amp, conv_grid)
    indices = np.arange(len(dataset)) if indices is None else indices
    return dataset_features(forward, dataset, indices, prep, device, batch_size, workers, desc, amp, project, out,
                            alone)


def whitening_sample(n: int, pca_sample: int, rng: np.random.Generator) -> np.ndarray:
    """The sorted indices of the images the PCA is fitted on: all ``n`` when ``pca_sample`` covers them, else
    ``pca_sample`` drawn with ``rng``."""
    return np.arange(n) if n <= pca_sample else np.sort(rng.choice(n, pca_sample, replace=False))


def fit_whitening(model, dataset, device: torch.device, rng: np.random.Generator, pca_dim: int = 256,
                  pca_sample: int = 65536, batch_size: int = 256, workers: Optional[int] = 0,
                  amp: Optional[torch.dtype] = None, desc: Optional[str] = "features",
                  embedding: Optional[Embedding] = None):
    """The PCA-whitening of the fc features, fitted on ``pca_sample`` images drawn with ``rng`` (all of them when N
    is not larger). Returns ``(pca (on every rank), the sample's indices, their features (rank 0 only))``."""
    fit = whitening_sample(len(dataset), pca_sample, rng)
    f = centre_view_features(model, dataset, device, batch_size, workers, amp, fit, desc=desc, embedding=embedding)
    return dist.on_main(lambda: PCAWhitening(pca_dim).fit(f)), fit, f


def whitened_features(model, dataset, device: torch.device, rng: np.random.Generator, pca_dim: int = 256,
                      pca_sample: int = 65536, batch_size: int = 256, workers: Optional[int] = 0,
                      amp: Optional[torch.dtype] = None, desc: Optional[str] = "features",
                      features: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The clustering input ``(N, pca_dim)``: fc features PCA-whitened and L2-normalised, on rank 0 (None on
    other ranks).

    The PCA is fitted on ``pca_sample`` images drawn with ``rng`` (all of them when N is not larger, which is
    then exactly the paper's pre-processing); the other images are projected on the device as they are
    extracted. So the largest arrays are ``pca_sample x D`` while fitting (freed before the rest is extracted)
    and ``N x pca_dim``, where keeping all ``N x D`` features would cost 21 GB on ImageNet with AlexNet.
    ``features``: the fc features of every image when the caller has them (one process, N <= ``pca_sample``):
    the same result, without a pass over the images."""
    n = len(dataset)
    if features is not None and n <= pca_sample:  # the fc features of every image, extracted by the caller
        return l2_normalize(PCAWhitening(pca_dim).fit_transform(features))
    # two passes (the PCA sample, then the rest): an int8 network is quantised once for both
    embedding = centre_view_embedding(model, dataset, amp) if amp is torch.qint8 and n > pca_sample else None
    pca, fit, f = fit_whitening(model, dataset, device, rng, pca_dim, pca_sample, batch_size, workers, amp, desc,
                                embedding)
    if len(fit) == n:
        return l2_normalize(pca.transform(f)) if dist.is_main() else None
    out = None
    if dist.is_main():
        out = np.empty((n, pca.components_.shape[0]), dtype=np.float32)
        out[fit] = l2_normalize(pca.transform(f))
    f = None  # the sample's raw features are done with: freed before the other images are extracted
    mean = torch.from_numpy(pca.mean_.astype(np.float32)).to(device)
    proj = torch.from_numpy(pca.projection_).to(device)
    project = lambda z: F.normalize((z - mean) @ proj, dim=1)
    rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
    return centre_view_features(model, dataset, device, batch_size, workers, amp, rest, project, out, desc,
                                embedding=embedding)
