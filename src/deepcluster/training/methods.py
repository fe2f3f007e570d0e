"""The three ways an epoch chooses its labels, each a small object holding what it carries between epochs.

- :class:`DeepClusterV1`, the paper: features -> PCA-whitening + L2 -> k-means (or PIC) -> pseudo-labels -> a
  fresh linear head with its own momentum-free optimiser -> one pass on a sample drawn uniformly over clusters.
- :class:`DeepClusterV2` (Caron et al. 2020): k-means on a memory bank of projections, whose centroids become the
  prototypes of a persistent head; the bank is this object's state, refreshed by the training pass.
- :class:`Supervised`: the same network, views and sampling on the true labels, the baseline of the tables.

Each ``epoch`` answers with an :class:`Epoch` (the clusters it learned, the metrics row) and each method with its
``final_clustering``, the trained network's clusters kept with the run (none for the supervised baseline). Under
torchrun every process calls them alike; rank 0 alone clusters and holds the bank.
"""
from __future__ import annotations

import time
from typing import NamedTuple, Optional

import numpy as np
import torch

from .. import distributed as dist
from ..clustering.health import imbalance_factor
from ..device import Precisions
from ..features import FeatureCache, Reading
from ..models import DeepClusterNet, build_model, soft_reset
from ..sampler import pseudo_labels, uniform_over_clusters
from ..settings import ClusteringSettings, ModelSettings, OptimisationSettings, RuntimeSettings
from ..space import Fitting, Space, clustering_input, embed, final_clustering, fit_clusters
from ..state import RunClustering, RunState
from .schedule import epoch_samples, epoch_seed
from .sgd import SGD
from .step import TrainPass, train_on_labels


class Epoch(NamedTuple):
    """What an epoch answers: ``assignment``, the cluster of every image it trained on (None when it learned no
    clusters: the supervised baseline), and its metrics ``row``."""
    assignment: Optional[np.ndarray]
    row: dict


class Method:
    """What every method shares: the settings it reads (what is learned, ``learn``; the clustering, ``clus``; the
    optimisation, ``optim``; the runtime's, ``runtime``), the device and the run's precisions there, the optimiser
    it trains the network with, and the run's feature cache (what it asks to keep of the images read on the
    way)."""

    persistent_head = False  # its head is trained with the body, by the body's optimiser

    def __init__(self, learn: ModelSettings, clus: ClusteringSettings, optim: OptimisationSettings,
                 runtime: RuntimeSettings, device: torch.device, precisions: Precisions,
                 cache: Optional[FeatureCache] = None):
        self.learn, self.clus, self.optim, self.runtime = learn, clus, optim, runtime
        self.device, self.precisions, self.cache = device, precisions, cache or FeatureCache()

    def extraction(self, epoch: int) -> Optional[torch.dtype]:
        """The precision of epoch ``epoch``'s extraction pass (torch.qint8: the network quantised to int8). Epoch
        1's is the kept one: the random network's features are also the closing evaluation's baseline, measured
        in the precision of everything the run evaluates."""
        return self.precisions.kept if epoch == 1 else self.precisions.extraction

    def _train(self, model, optimizers: list, dataset, order: np.ndarray, targets: np.ndarray, epoch: int,
               keep_projections: bool = False):
        optim, runtime = self.optim, self.runtime
        how = TrainPass(runtime.seed, optim.batch_size, runtime.workers, self.precisions.training, optim.crop_scale,
                        optim.lr)
        return train_on_labels(model, optimizers, dataset, order, targets, how, epoch, keep_projections)

    def start(self, model: DeepClusterNet, dataset, state: Optional[RunState]) -> SGD:
        """Put the head in place (a fresh run's), then make the optimiser over what is trained, from ``state``'s
        when the run resumes."""
        if state is None:
            self.fresh_head(model, dataset)
        optim = self.optim
        params = model.parameters() if self.persistent_head else model.body_parameters()
        optimizer = SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        if state is not None:
            optimizer.load_state_dict(state.optimizer)
        return optimizer

    def fresh_head(self, model: DeepClusterNet, dataset) -> None:
        pass

    def saved(self) -> dict:
        """What of this method's state a checkpoint keeps (beyond the network and the optimiser)."""
        return {}

    def final_clustering(self, model: DeepClusterNet, dataset, seed: int, features: Optional[np.ndarray] = None
                         ) -> tuple[Optional[RunClustering], Optional[np.ndarray]]:
        """The trained network's clustering of ``dataset``, fitted as the epochs fit theirs (see
        :func:`~deepcluster.space.final_clustering`): ``(clustering, its input)`` on rank 0."""
        reading = Reading(self.optim.batch_size, self.runtime.workers, self.precisions.kept, "final clustering")
        fitting = Fitting("projection" if self.learn.method == "v2" else "whitened",
                          np.random.default_rng([self.runtime.seed, self.optim.epochs + 1, 1]), self.clus.pca_dim,
                          self.clus.pca_sample)
        return final_clustering(model, dataset, self.device, reading, fitting, self.clus, seed, features)

    def _timed_row(self, epoch: int, loss: float, labels: np.ndarray, k: int, health: dict, times: list) -> dict:
        return {"epoch": epoch, "loss": loss, "clusters": k, **health, "imbalance": imbalance_factor(labels, k),
                "time_features": times[1] - times[0], "time_clustering": times[2] - times[1],
                "time_training": times[3] - times[2]}

    def _reading(self, epoch: int, desc: str) -> Reading:
        return Reading(self.optim.batch_size, self.runtime.workers, self.extraction(epoch), desc)


class DeepClusterV1(Method):
    """Epoch 1 reads the random network's fc and last conv layer in its one extraction pass when the run's cache
    wants them (the closing evaluation's random-init baselines on the training images, one process, N <=
    pca_sample) and keeps them there, with the clustering input they gave (PCA-whitened on all of them,
    L2-normalised)."""

    def epoch(self, model: DeepClusterNet, optimizer, dataset, epoch: int) -> Epoch:
        clus, optim, device, seed = self.clus, self.optim, self.device, self.runtime.seed
        # The global generator (head initialisation, dropout) restarts from (seed, epoch): resume-exact.
        torch.manual_seed(epoch_seed(seed, epoch))
        t0 = time.perf_counter()
        if optim.reset_every and epoch > 1 and (epoch - 1) % optim.reset_every == 0:
            fresh = build_model(self.learn.arch, dataset.channels, model.image_size, self.learn.sobel)
            soft_reset(model, fresh, optim.reset_alpha, model.late_parameters())
        reading = self._reading(epoch, f"epoch {epoch} features")
        keep = epoch == 1 and self.cache.wants("random-init", dataset)
        first = self.cache.read("random-init", model, dataset, device, reading) if keep else None
        fitting = Fitting("whitened", np.random.default_rng([seed, epoch, 1]), clus.pca_dim, clus.pca_sample)
        _, x = clustering_input(model, dataset, device, reading, fitting, first[0] if keep else None)
        if keep:  # the evaluation's random-init PCA-whitened baseline, too
            self.cache.add("random-init", dataset, x)
        t1 = time.perf_counter()

        def cluster():  # on rank 0, which alone holds x: the main clustering, then one per over-clustering head
            main, *more = fit_clusters(x, clus, epoch_seed(seed, epoch), device, [None] + clus.overcluster_ks)
            extra = [pseudo_labels(c.labels_) for c in more]
            return (*pseudo_labels(main.labels_), main.health_.metrics(), extra)

        labels, n_clusters, health, extra = dist.on_main(cluster)
        t2 = time.perf_counter()
        # One head per clustering; the sampling and the run's assignment are the main clustering's.
        targets = np.stack([labels] + [e[0] for e in extra], 1) if extra else labels
        head = model.reset_head([n_clusters] + [e[1] for e in extra] if extra else n_clusters)
        # The head has its own optimiser, without momentum, since it starts from scratch every epoch, and at the
        # full lr whatever the body's schedule (as the reference's): a head trained at the decayed lr of the last
        # epochs cannot learn its new pseudo-labels, and the loss climbs back over the end of the schedule.
        head_opt = SGD(head.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        sample = uniform_over_clusters(labels, epoch_samples(optim.reassign, len(dataset)),
                                       np.random.default_rng([seed, epoch]))
        loss, _ = self._train(model, [optimizer, head_opt], dataset, sample, targets, epoch)
        row = self._timed_row(epoch, loss, labels, n_clusters, health, [t0, t1, t2, time.perf_counter()])
        if extra:  # the loss is the mean over the heads: its chance level is the mean of their ln k
            row["heads"] = [n_clusters] + [e[1] for e in extra]
        return Epoch(labels, row)


class DeepClusterV2(Method):
    """``bank``: the projections of every image, ``(N, proj_dim)``, from the previous epoch's training pass (from a
    centre-view pass on the first epoch, or every epoch with ``learn.bank == "centre"``); on rank 0 only. Set it
    (a resumed run's) after construction."""

    persistent_head = True
    bank: Optional[torch.Tensor] = None

    def fresh_head(self, model: DeepClusterNet, dataset) -> None:
        model.use_prototypes(self.clus.k, self.learn.proj_dim, self.learn.temperature)

    def saved(self) -> dict:
        return {"bank": self.bank} if self.bank is not None else {}

    def epoch(self, model: DeepClusterNet, optimizer, dataset, epoch: int) -> Epoch:
        device, seed, which = self.device, self.runtime.seed, self.learn.bank
        torch.manual_seed(epoch_seed(seed, epoch))
        t0 = time.perf_counter()
        if dist.broadcast_object(self.bank is None or which == "centre"):  # rank 0 alone knows
            bank = embed(model, dataset, Space("projection"), device, self._reading(epoch, f"epoch {epoch} bank"))
            self.bank = torch.from_numpy(bank) if bank is not None else None
        t1 = time.perf_counter()

        def cluster():  # on rank 0, which alone holds the bank
            km, = fit_clusters(self.bank.numpy(), self.clus, epoch_seed(seed, epoch), device, [None])
            return km.labels_, km.cluster_centers_, km.health_.metrics()

        labels, centroids, health = dist.on_main(cluster)
        model.head.set_prototypes(torch.from_numpy(centroids))
        t2 = time.perf_counter()
        n = len(dataset)
        rng, m = np.random.default_rng([seed, epoch]), epoch_samples(self.optim.reassign, n)
        order = np.concatenate([rng.permutation(n) for _ in range(-(-m // n))])[:m]  # every image once per pass
        refresh = which == "train"
        loss, kept = self._train(model, [optimizer], dataset, order, labels, epoch, keep_projections=refresh)
        if refresh:  # this epoch's projections become the next epoch's bank, row by dataset index
            idx, z = kept
            dist.gather_rows(z, idx, n, out=self.bank.numpy() if self.bank is not None else None)
        return Epoch(labels, self._timed_row(epoch, loss, labels, self.clus.k, health,
                                             [t0, t1, t2, time.perf_counter()]))


class Supervised(Method):
    """The baseline: the epochs train on the true labels; no clusters are learned, none kept."""
    persistent_head = True

    def fresh_head(self, model: DeepClusterNet, dataset) -> None:
        model.reset_head(int(dataset.targets.max()) + 1)

    def final_clustering(self, model, dataset, seed, features=None) -> tuple[None, None]:
        return None, None

    def epoch(self, model: DeepClusterNet, optimizer, dataset, epoch: int) -> Epoch:
        seed = self.runtime.seed
        torch.manual_seed(epoch_seed(seed, epoch))
        t0 = time.perf_counter()
        sample = uniform_over_clusters(dataset.targets, epoch_samples(self.optim.reassign, len(dataset)),
                                       np.random.default_rng([seed, epoch]))
        loss, _ = self._train(model, [optimizer], dataset, sample, dataset.targets, epoch)
        return Epoch(None, {"epoch": epoch, "loss": loss, "time_training": time.perf_counter() - t0})
