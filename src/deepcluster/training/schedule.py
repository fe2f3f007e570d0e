"""What each epoch is given: its random seed, its learning rate and how many samples it trains on. Every epoch
derives its random numbers from ``(seed, epoch)``, so a run resumed from the checkpoint of epoch e repeats epoch
e + 1 exactly as an uninterrupted run would (deterministic on CPU)."""
from __future__ import annotations

import math


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 10_007 + epoch


def epoch_lr(lr: float, schedule: str, epochs: int, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based): ``lr``, or with the cosine schedule
    ``lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2``, from ``lr`` at the first epoch towards 0."""
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
    return lr


def epoch_samples(reassign: float, n: int) -> int:
    """Training samples drawn per epoch: ``reassign`` passes over the ``n`` images between two clusterings (the
    reference's ``--reassign``)."""
    return max(1, round(reassign * n))
