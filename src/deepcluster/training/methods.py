"""The three ways an epoch chooses its labels, each a small object holding what it carries between epochs.

- :class:`DeepClusterV1`, the paper: features -> PCA-whitening + L2 -> k-means (or PIC) -> pseudo-labels -> a
  fresh linear head with its own momentum-free optimiser -> one pass on a sample drawn uniformly over clusters.
- :class:`DeepClusterV2` (Caron et al. 2020): k-means on a memory bank of projections, whose centroids become the
  prototypes of a persistent head; the bank is this object's state, refreshed by the training pass.
- :class:`Supervised`: the same network, views and sampling on the true labels, the baseline of the tables.

Each ``epoch`` returns ``(assignment (N,), metrics row)``. Under torchrun every process calls it alike; rank 0
alone clusters and holds the bank.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed as dist
from ..clustering import build_clustering
from ..config import Config
from ..device import extraction_dtype, kept_dtype
from ..evaluate.closing import closing_features
from ..evaluate.metrics import imbalance_factor
from ..features import centre_view_features, whitened_features
from ..models import DeepClusterNet, build_model, soft_reset
from ..sampler import pseudo_labels, uniform_over_clusters
from ..state import RunState
from .schedule import epoch_samples, epoch_seed
from .sgd import SGD
from .step import train_on_labels


class Method:
    """What every method shares: the config, the device, and the optimiser it trains the network with."""

    clusters = True  # learns pseudo-labels (their NMI against the labels and the previous epoch is logged)
    persistent_head = False  # its head is trained with the body, by the body's optimiser

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device

    def extraction(self, epoch: int, images: int) -> Optional[torch.dtype]:
        """The precision of epoch ``epoch``'s extraction pass (torch.qint8: the network quantised to int8). Epoch
        1's is :func:`~deepcluster.device.kept_dtype`'s: the random network's features are also the closing
        evaluation's baseline, measured in the precision of everything the run evaluates."""
        cfg, device = self.cfg, self.device
        return kept_dtype(cfg, device) if epoch == 1 else extraction_dtype(cfg, device, images)

    def start(self, model: DeepClusterNet, dataset, state: Optional[RunState]) -> SGD:
        """Put the head in place (a fresh run's), then make the optimiser over what is trained, from ``state``'s
        when the run resumes."""
        if state is None:
            self.fresh_head(model, dataset)
        cfg = self.cfg
        params = model.parameters() if self.persistent_head else model.body_parameters()
        optimizer = SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if state is not None:
            optimizer.load_state_dict(state.optimizer)
        return optimizer

    def fresh_head(self, model: DeepClusterNet, dataset) -> None:
        pass

    def saved(self) -> dict:
        """What of this method's state a checkpoint keeps (beyond the network and the optimiser)."""
        return {}

    def _timed_row(self, epoch: int, loss: float, labels: np.ndarray, k: int, health: dict, times: list) -> dict:
        return {"epoch": epoch, "loss": loss, "clusters": k, **health, "imbalance": imbalance_factor(labels, k),
                "time_features": times[1] - times[0], "time_clustering": times[2] - times[1],
                "time_training": times[3] - times[2]}

    def _clustering(self, epoch: int, k: Optional[int] = None, offset: int = 0):
        return build_clustering(self.cfg, epoch_seed(self.cfg.seed, epoch) + offset,
                                "auto" if self.device.type == "cuda" else "cpu", k)


class DeepClusterV1(Method):
    """``keep_first``: epoch 1 reads the random network's fc and last conv layer in its one extraction pass
    (:func:`~deepcluster.evaluate.closing.closing_features`) and keeps them, with the clustering input they gave
    (PCA-whitened on all of them, L2-normalised), as ``first_features``: the closing evaluation's random-init
    baselines on the training images, not computed again (one process, N <= pca_sample; the run's caller
    decides)."""

    keep_first, first_features = False, None

    def epoch(self, model: DeepClusterNet, optimizer, dataset, epoch: int) -> tuple[np.ndarray, dict]:
        cfg, device = self.cfg, self.device
        # The global generator (head initialisation, dropout) restarts from (seed, epoch): resume-exact.
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        t0 = time.perf_counter()
        if cfg.reset_every and epoch > 1 and (epoch - 1) % cfg.reset_every == 0:
            fresh = build_model(cfg.arch, dataset.channels, model.image_size, cfg.sobel)
            soft_reset(model, fresh, cfg.reset_alpha, model.late_parameters())
        desc = f"epoch {epoch} features"
        if epoch == 1 and self.keep_first:
            self.first_features = closing_features(model, dataset, cfg, device, desc)
        x = whitened_features(model, dataset, device, np.random.default_rng([cfg.seed, epoch, 1]),
                              pca_dim=cfg.pca_dim, pca_sample=cfg.pca_sample, batch_size=cfg.batch_size,
                              workers=cfg.workers, amp=self.extraction(epoch, len(dataset)), desc=desc,
                              features=self.first_features[0] if epoch == 1 and self.keep_first else None)
        if epoch == 1 and self.keep_first:  # the evaluation's random-init PCA-whitened baseline, too
            self.first_features = (*self.first_features, x)
        t1 = time.perf_counter()

        def cluster():  # on rank 0, which alone holds x: the main clustering, then one per over-clustering head
            clus = self._clustering(epoch).fit(x)
            extra = [pseudo_labels(self._clustering(epoch, k, i + 1).fit(x).labels_)
                     for i, k in enumerate(cfg.overcluster_ks)]
            return (*pseudo_labels(clus.labels_), clus.health_.metrics(), extra)

        labels, n_clusters, health, extra = dist.on_main(cluster)
        t2 = time.perf_counter()
        # One head per clustering; the sampling and the run's assignment are the main clustering's.
        targets = np.stack([labels] + [e[0] for e in extra], 1) if extra else labels
        head = model.reset_head([n_clusters] + [e[1] for e in extra] if extra else n_clusters)
        # The head has its own optimiser, without momentum, since it starts from scratch every epoch, and at the
        # full lr whatever the body's schedule (as the reference's): a head trained at the decayed lr of the last
        # epochs cannot learn its new pseudo-labels, and the loss climbs back over the end of the schedule.
        head_opt = SGD(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sample = uniform_over_clusters(labels, epoch_samples(cfg.reassign, len(dataset)),
                                       np.random.default_rng([cfg.seed, epoch]))
        loss, _ = train_on_labels(model, optimizer, head_opt, dataset, sample, targets, cfg, epoch, device)
        row = self._timed_row(epoch, loss, labels, n_clusters, health, [t0, t1, t2, time.perf_counter()])
        if extra:  # the loss is the mean over the heads: its chance level is the mean of their ln k
            row["heads"] = [n_clusters] + [e[1] for e in extra]
        return labels, row


class DeepClusterV2(Method):
    """``bank``: the projections of every image, ``(N, proj_dim)``, from the previous epoch's training pass (from a
    centre-view pass on the first epoch, or every epoch with ``cfg.bank == "centre"``); on rank 0 only."""

    persistent_head = True

    def __init__(self, cfg: Config, device: torch.device, bank: Optional[torch.Tensor] = None):
        super().__init__(cfg, device)
        self.bank = bank

    def fresh_head(self, model: DeepClusterNet, dataset) -> None:
        model.use_prototypes(self.cfg.k, self.cfg.proj_dim, self.cfg.temperature)

    def saved(self) -> dict:
        return {"bank": self.bank} if self.bank is not None else {}

    def epoch(self, model: DeepClusterNet, optimizer, dataset, epoch: int) -> tuple[np.ndarray, dict]:
        cfg, device = self.cfg, self.device
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        t0 = time.perf_counter()
        if dist.broadcast_object(self.bank is None or cfg.bank == "centre"):  # rank 0 alone knows
            bank = centre_view_features(model, dataset, device, batch_size=cfg.batch_size, workers=cfg.workers,
                                        amp=self.extraction(epoch, len(dataset)),
                                        project=lambda f: model.head.project(F.relu(f)), desc=f"epoch {epoch} bank")
            self.bank = torch.from_numpy(bank) if bank is not None else None
        t1 = time.perf_counter()

        def cluster():  # on rank 0, which alone holds the bank
            km = self._clustering(epoch).fit(self.bank.numpy())
            return km.labels_, km.cluster_centers_, km.health_.metrics()

        labels, centroids, health = dist.on_main(cluster)
        model.head.set_prototypes(torch.from_numpy(centroids))
        t2 = time.perf_counter()
        rng, n, m = np.random.default_rng([cfg.seed, epoch]), len(dataset), epoch_samples(cfg.reassign, len(dataset))
        order = np.concatenate([rng.permutation(n) for _ in range(-(-m // n))])[:m]  # every image once per pass
        refresh = cfg.bank == "train"
        loss, kept = train_on_labels(model, optimizer, None, dataset, order, labels, cfg, epoch, device,
                                     keep_projections=refresh)
        if refresh:  # this epoch's projections become the next epoch's bank, row by dataset index
            idx, z = kept
            dist.gather_rows(z, idx, n, out=self.bank.numpy() if self.bank is not None else None)
        return labels, self._timed_row(epoch, loss, labels, cfg.k, health, [t0, t1, t2, time.perf_counter()])


class Supervised(Method):
    clusters = False
    persistent_head = True

    def fresh_head(self, model: DeepClusterNet, dataset) -> None:
        model.reset_head(int(dataset.targets.max()) + 1)

    def epoch(self, model: DeepClusterNet, optimizer, dataset, epoch: int) -> tuple[np.ndarray, dict]:
        cfg = self.cfg
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        t0 = time.perf_counter()
        sample = uniform_over_clusters(dataset.targets, epoch_samples(cfg.reassign, len(dataset)),
                                       np.random.default_rng([cfg.seed, epoch]))
        loss, _ = train_on_labels(model, optimizer, None, dataset, sample, dataset.targets, cfg, epoch, self.device)
        return dataset.targets, {"epoch": epoch, "loss": loss, "time_training": time.perf_counter() - t0}


def method_for(cfg: Config, device: torch.device, state: Optional[RunState] = None) -> Method:
    """The method ``cfg`` trains with, carrying on from ``state`` when the run resumes."""
    if cfg.supervised:
        return Supervised(cfg, device)
    if cfg.method == "v2":
        return DeepClusterV2(cfg, device, state.bank if state is not None else None)
    return DeepClusterV1(cfg, device)
