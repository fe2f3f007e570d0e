"""Fit and score on labels, shared by the linear probes (augmented views) and transfer's fine-tuning: the
evaluation's optimiser, its training loop over augmented views, and the top-1 of a network's own classifier."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..data import make_loader
from ..features import extract_features
from ..views import centre_input, train_view


@dataclass(frozen=True)
class FitOptions:
    """How an evaluation fits on labels: ``epochs`` passes at ``lr`` (cosine-decayed to 0), ``batch_size`` images a
    step, augmented views cropping at least ``crop_scale`` of the image, seeded with ``seed``, ``workers`` loader
    processes, a progress bar when ``progress``."""
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 256
    crop_scale: float = 0.08
    seed: int = 0
    workers: Optional[int] = 0
    progress: bool = True


def sgd_cosine(params, lr: float, steps: int):
    """The evaluation's optimiser: SGD (momentum 0.9, weight decay 1e-4) with the lr cosine-decayed to 0 over
    ``steps`` steps. Returns ``(optimizer, scheduler)``; step both every batch."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))


def fit_on_views(batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], params, train_set,
                 image_size: int, device: torch.device, how: FitOptions = FitOptions(), desc: str = "fit",
                 between: Optional[Callable[[int], bool]] = None) -> int:
    """Minimise ``batch_loss(x, y)`` over ``params`` as ``how`` says: ``how.epochs`` passes over ``train_set``,
    each in a new random order (seeded), every batch seen in its augmented view (random crop of at least
    ``how.crop_scale``, flip; channels-last) against its labels, with :func:`sgd_cosine` stepped every batch.
    ``between(passes done)`` runs before each pass and after the last (to set train / eval modes, to score a
    held-out part); when it returns True the fit stops there. Returns the passes made."""
    opt, sched = sgd_cosine(params, how.lr, how.epochs * math.ceil(len(train_set) / how.batch_size))
    y_train = torch.as_tensor(train_set.targets, device=device)
    gen, rng = torch.Generator().manual_seed(how.seed), np.random.default_rng(how.seed)
    for done in tqdm(range(how.epochs), desc=desc, unit="epoch", disable=None if how.progress else True,
                     leave=False):
        if between is not None and between(done):
            return done
        for images, idx in make_loader(train_set, rng.permutation(len(train_set)), how.batch_size, how.workers):
            x = train_view(images.to(device), image_size, train_set.mean, train_set.std, how.crop_scale,
                           generator=gen)
            loss = batch_loss(x.contiguous(memory_format=torch.channels_last), y_train[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if between is not None:
        between(how.epochs)
    return how.epochs


def classifier_accuracy(model, test_set, image_size: int, device, batch_size: int = 256,
                        workers: int | None = 0) -> float:
    """Top-1 of a network's own classifier (a supervised run's, a fine-tuned one's) on the centre view of
    ``test_set``."""
    model.eval()
    loader = make_loader(test_set, range(len(test_set)), batch_size, workers)
    logits = extract_features(model, loader, len(test_set), centre_input(image_size, test_set.mean, test_set.std),
                              torch.device(device), None)
    return float((logits.argmax(1) == np.asarray(test_set.targets)).mean())
