"""Seeded draws of a dataset's images: ``--subset`` and the closing evaluation's sample.

A draw is stratified when the images are labelled (each class keeps its share, as near as whole numbers allow,
and every class keeps at least one image when there are as many draws as classes), uniform otherwise, and
returned in the dataset's own order (a prepared folder's shards are then read front to back)."""
from __future__ import annotations

from typing import Optional

import numpy as np


def draw_indices(total: int, n: int, targets: Optional[np.ndarray], seed: int) -> np.ndarray:
    """``min(n, total)`` distinct indices of ``range(total)``, sorted: a seeded stratified draw over ``targets``
    when given (largest remainders share the rounding), a uniform one otherwise."""
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if targets is None:
        return np.sort(rng.choice(total, size=n, replace=False))
    classes, counts = np.unique(np.asarray(targets), return_counts=True)
    share = counts * (n / total)
    take = np.floor(share).astype(np.int64)
    if n >= len(classes):
        take = np.maximum(take, 1)  # no class left out
    left = n - take.sum()
    order = np.argsort(-(share - np.floor(share)), kind="stable")  # largest remainders first
    while left != 0:  # with the at-least-one rule, ``left`` may be negative: take from the largest classes
        for c in order if left > 0 else np.argsort(-take, kind="stable"):
            if left == 0:
                break
            if left > 0 and take[c] < counts[c]:
                take[c] += 1
                left -= 1
            elif left < 0 and take[c] > 1:
                take[c] -= 1
                left += 1
    targets = np.asarray(targets)
    picked = [rng.choice(np.flatnonzero(targets == c), size=int(t), replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def drawn(dataset, n: int, seed: int):
    """``dataset`` seen through a seeded draw of ``n`` of its images (:func:`draw_indices`); ``dataset`` itself
    when it holds ``n`` images or fewer."""
    if n >= len(dataset):
        return dataset
    return dataset.take(draw_indices(len(dataset), n, dataset.targets, seed))
