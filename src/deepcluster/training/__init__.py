"""How one epoch is spent: the schedule (:mod:`.schedule`), one pass of training on given labels (:mod:`.step`)
and the three methods that choose those labels (:mod:`.methods`). :mod:`deepcluster.train` runs them epoch after
epoch."""
from .methods import DeepClusterV1, DeepClusterV2, Epoch, Method, Supervised
from .schedule import epoch_lr, epoch_samples, epoch_seed
from .step import train_on_labels

__all__ = ["DeepClusterV1", "DeepClusterV2", "Epoch", "Method", "Supervised", "epoch_lr", "epoch_samples", "epoch_seed",
           "train_on_labels"]
