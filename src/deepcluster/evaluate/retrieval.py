"""Instance retrieval with R-MAC descriptors, the protocol of the paper's Table 5.

R-MAC (Regional Maximum Activation of Convolutions) is from G. Tolias, R. Sicre and H. Jégou, "Particular object
retrieval with integral max-pooling of CNN activations", ICLR 2016. A conv feature map is max-pooled over square
regions at several scales; each regional vector is L2-normalised, PCA-whitened (whitening learned on regional
vectors of a *separate* image set), L2-normalised again, summed over regions and L2-normalised. Queries are ranked
against a database by cosine similarity and scored by mean average precision, a database item being relevant when
it shares the query's label.
"""
from __future__ import annotations

import numpy as np
import torch

from ..preprocess import PCAWhitening, l2_normalize

Box = tuple[int, int, int, int]


def _positions(length: int, side: int, n: int) -> list[int]:
    """Start offsets of ``n`` windows of ``side`` spread uniformly from 0 to ``length - side``."""
    return [int(round(p)) for p in np.linspace(0, length - side, n)]


def rmac_regions(h: int, w: int, levels: int = 3) -> list[Box]:
    """Square R-MAC regions on an ``h x w`` feature map, as ``(y0, x0, y1, x1)`` boxes (end-exclusive).

    At level ``l = 1..levels`` the side is ``2 * min(h, w) / (l + 1)``; ``l`` regions fit along the short side
    and ``l + extra`` along the long one, where ``extra`` makes consecutive level-1 regions overlap as close to 40%
    as possible (0 for a square map). Every level contributes at least one box, all inside the map, at least 1 cell.
    """
    short, long_ = min(h, w), max(h, w)
    extra = 0
    if h != w:
        # Number of level-1 squares along the long side (2..7) whose overlap is nearest the paper's 40%.
        steps = np.arange(2, 8)
        overlap = (short - (long_ - short) / (steps - 1)) / short
        extra = int(steps[np.argmin(np.abs(overlap - 0.4))]) - 1
    boxes: list[Box] = []
    for level in range(1, levels + 1):
        side = max(1, int(2 * short / (level + 1)))
        ny = level + (extra if h > w else 0)
        nx = level + (extra if w > h else 0)
        # Rounding can make two windows coincide on small maps: keep each box once per level.
        level_boxes = dict.fromkeys((y, x, y + side, x + side)
                                    for y in _positions(h, side, ny) for x in _positions(w, side, nx))
        boxes.extend(level_boxes)
    return boxes


def regional_max(fmap: torch.Tensor, regions: list[Box]) -> torch.Tensor:
    """Max-pool ``fmap (B, C, H, W)`` over each ``(y0, x0, y1, x1)`` region -> ``(B, R, C)``."""
    return torch.stack([fmap[:, :, y0:y1, x0:x1].amax(dim=(2, 3)) for y0, x0, y1, x1 in regions], dim=1)


def rmac_from_maps(maps: torch.Tensor, levels: int = 3) -> np.ndarray:
    """Regional max vectors of feature maps ``(B, C, H, W)`` -> float32 ``(B, R, C)``, R from :func:`rmac_regions`."""
    regions = rmac_regions(maps.shape[2], maps.shape[3], levels)
    return regional_max(maps.detach(), regions).float().cpu().numpy()


class RegionWhitening:
    """PCA-whitening of L2-normalised regional vectors. Both ``fit`` and ``transform`` take raw regional vectors and
    L2-normalise them first, so the whitening is learned on the same distribution it is applied to."""

    def __init__(self, n_components: int | None = None, eps: float = 1e-5):
        self.n_components, self.eps = n_components, eps

    def fit(self, regional: np.ndarray) -> "RegionWhitening":
        """regional: ``(M, C)`` (or ``(..., C)``, flattened) vectors from images kept apart from queries/database."""
        x = np.asarray(regional, dtype=np.float32)
        x = x.reshape(-1, x.shape[-1])
        self.pca_ = PCAWhitening(self.n_components or x.shape[1], self.eps).fit(l2_normalize(x))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(..., C)`` -> L2-normalised, whitened and L2-normalised again ``(..., C')``, C' <= n_components."""
        x = np.asarray(x, dtype=np.float32)
        flat = l2_normalize(self.pca_.transform(l2_normalize(x.reshape(-1, x.shape[-1]))))
        return flat.reshape(*x.shape[:-1], flat.shape[-1])


def rmac_descriptors(regional: np.ndarray, whitening: RegionWhitening | None = None) -> np.ndarray:
    """Regional vectors ``(B, R, C)`` -> unit-norm R-MAC descriptors ``(B, C')`` (C' = C without whitening)."""
    regional = np.asarray(regional, dtype=np.float32)
    if whitening is None:
        b, r, c = regional.shape
        vecs = l2_normalize(regional.reshape(b * r, c)).reshape(b, r, c)
    else:
        vecs = whitening.transform(regional)
    return l2_normalize(vecs.sum(axis=1))


def _average_precisions(scores: np.ndarray, relevant: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Non-interpolated AP of each row of ``scores (Q, M)`` against ``relevant (Q, M)``; items where ``ignore``
    is True take no part in the ranking. Rows without a relevant item score 0."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rel = np.take_along_axis(relevant, order, axis=1)
    if ignore is not None:
        kept = ~np.take_along_axis(ignore, order, axis=1)
        # Every row drops the same number of items, so the ranked lists stay rectangular.
        rel = rel[kept].reshape(len(rel), -1)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    return (precision * rel).sum(axis=1) / np.maximum(rel.sum(axis=1), 1)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one ranking: ``scores (M,)`` (higher ranks first), ``relevant (M,)`` bool. The mean of the precision
    at the rank of each relevant item; 0 when nothing is relevant."""
    scores, relevant = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    return float(_average_precisions(scores[None], relevant[None])[0])


def mean_average_precision(query: np.ndarray, database: np.ndarray, query_labels: np.ndarray,
                           db_labels: np.ndarray, exclude_self: bool = False, chunk: int = 1024) -> float:
    """mAP of ranking ``database (M, D)`` by cosine similarity to each ``query (Q, D)``; relevant = same label.

    ``exclude_self``: query and database are the same set (Q == M, same order), so query ``i`` is removed from its
    own ranking. Queries are processed ``chunk`` at a time to bound the ``(chunk, M)`` score matrix.
    """
    q, db = l2_normalize(query), l2_normalize(database)
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    if exclude_self and len(q) != len(db):
        raise ValueError(f"exclude_self needs the queries to be the database, got {len(q)} vs {len(db)} items")
    aps = []
    for s in range(0, len(q), chunk):
        idx = np.arange(s, min(s + chunk, len(q)))
        relevant = query_labels[idx, None] == db_labels[None, :]
        ignore = idx[:, None] == np.arange(len(db))[None, :] if exclude_self else None
        aps.append(_average_precisions(q[idx] @ db.T, relevant, ignore))
    return float(np.concatenate(aps).mean())
