"""The state of a run, and the one place its checkpoint format is written and read.

Training saves a :class:`RunState` after every epoch; a resumed run, the evaluations, the report and the importer
of the reference's checkpoints all go through :meth:`RunState.load`. The file is the dict of
:meth:`RunState.to_dict` under :mod:`deepcluster.checkpoint`'s format tag, so checkpoints written before this class
existed load unchanged.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .checkpoint import FORMAT, load_checkpoint, load_weights_only, save_checkpoint
from .config import Config, ConfigError
from .models.original import convert_original, convert_torchvision
from .recipe import resolve
from .rundir import with_legacy

CHECKPOINT = "checkpoint.pt"


@dataclass
class RunClustering:
    """The clustering of the trained network, kept with the run so that any image can be placed in its clusters.

    ``space``: "whitened" (v1: the fc features, minus ``mean``, times ``projection`` (PCA-whitening), then
    L2-normalised, as the training clusters them) or "projection" (v2: the prototype head's unit-norm
    projections). One entry per clustering head, the main one first: ``centroids`` ``(k, d)``; ``labels`` ``(N,)``
    and ``distances`` ``(N,)``, each training image's nearest centroid and its Euclidean distance in the space.
    ``precision``: what the features were extracted in (:func:`~deepcluster.device.precision_name`), so that
    images are placed later as these were, on any machine; None in runs written before it was kept."""

    space: str
    centroids: list
    labels: list
    distances: list
    mean: Optional[np.ndarray] = None
    projection: Optional[np.ndarray] = None
    precision: Optional[str] = None

    def to_dict(self) -> dict:
        tensors = lambda arrays: [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        d = {"space": self.space, "centroids": tensors(self.centroids), "labels": tensors(self.labels),
             "distances": tensors(self.distances)}
        if self.mean is not None:
            d |= {"mean": torch.from_numpy(self.mean), "projection": torch.from_numpy(self.projection)}
        if self.precision is not None:
            d["precision"] = self.precision
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunClustering":
        arrays = lambda key: [t.numpy() for t in d[key]]
        one = lambda key: None if d.get(key) is None else d[key].numpy()
        return cls(d["space"], arrays("centroids"), arrays("labels"), arrays("distances"), one("mean"),
                   one("projection"), d.get("precision"))


def _on_cpu(tree):
    """A copy of the tensors in ``tree`` (nested dicts, lists, tuples), on the CPU; the dicts keep their type and
    attributes (a ``state_dict``'s ``_metadata``)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        out = copy.copy(tree)
        out.update((k, _on_cpu(v)) for k, v in tree.items())
        return out
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_cpu(v) for v in tree)
    return tree


@dataclass
class RunState:
    """What a run has learned after ``epoch`` epochs.

    - ``model``: the network's ``state_dict``, its head included; ``head_classes`` the head's size (a list for
      several clustering heads), which a new network needs before it can take those weights;
    - ``optimizer``: the body optimiser's state (absent in imported checkpoints);
    - ``assignment``: the last epoch's cluster id of every training image, in dataset order (None for the
      supervised baseline's true labels and for imported checkpoints);
    - ``bank``: DeepCluster-v2's memory bank of projections, ``(N, proj_dim)``;
    - ``imported_from``: where converted weights came from;
    - ``clustering``: the trained network's clustering (:class:`RunClustering`), once training has ended.
    """

    epoch: int
    config: Config
    model: dict
    head_classes: Union[int, list]
    optimizer: Optional[dict] = None
    assignment: Optional[np.ndarray] = None
    bank: Optional[torch.Tensor] = None
    imported_from: Optional[str] = None
    clustering: Optional[RunClustering] = None

    def snapshot(self) -> "RunState":
        """This state with its tensors (weights, optimiser, bank) copied to the CPU: training can go on changing
        them while the copy is written (:class:`~deepcluster.checkpoint.BackgroundWriter`)."""
        return dataclasses.replace(self, model=_on_cpu(self.model), optimizer=_on_cpu(self.optimizer),
                                   bank=_on_cpu(self.bank))

    def to_dict(self) -> dict:
        d = {"epoch": self.epoch, "config": self.config.to_dict(), "arch": self.config.arch, "model": self.model,
             "head_classes": self.head_classes}
        optional = {"optimizer": self.optimizer, "bank": self.bank, "imported_from": self.imported_from,
                    "assignment": None if self.assignment is None else torch.from_numpy(self.assignment),
                    "clustering": None if self.clustering is None else self.clustering.to_dict()}
        return {**d, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_dict(cls, d: dict, source: str = "checkpoint") -> "RunState":
        missing = [k for k in ("epoch", "config", "model", "head_classes") if k not in d]
        if missing:
            raise ConfigError(f"{source} lacks {', '.join(missing)}: it was not written by 'deepcluster train'")
        assignment = d.get("assignment")
        return cls(epoch=int(d["epoch"]), config=with_legacy(Config.from_dict(d["config"], source=source)),
                   model=d["model"],
                   head_classes=d["head_classes"], optimizer=d.get("optimizer"),
                   assignment=None if assignment is None else assignment.numpy(), bank=d.get("bank"),
                   imported_from=d.get("imported_from"),
                   clustering=RunClustering.from_dict(d["clustering"]) if d.get("clustering") else None)

    def save(self, path: str | Path) -> None:
        """Write atomically (a crash leaves the old file or the new one)."""
        save_checkpoint(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "RunState":
        """From a run directory (its ``checkpoint.pt``) or a checkpoint file; one ConfigError line when it is
        missing, damaged, or not ours."""
        path = checkpoint_path(path)
        return cls.from_dict(load_checkpoint(path), source=str(path))

    @classmethod
    def from_original(cls, reference: dict, source: str = "checkpoint", data: str = "") -> "RunState":
        """A checkpoint of the reference implementation (:func:`~deepcluster.models.original.convert_original`)
        as a state of ours: the config of its architecture at 224 px (``data`` recorded if given), the converted
        weights, its head's size and its epoch."""
        arch, sobel, model, head_classes = convert_original(reference, source)
        cfg = resolve(Config(data=data, recipe="paper", arch=arch, sobel=sobel, image_size=224,
                             k=max(head_classes, 2)))
        return cls(epoch=int(reference.get("epoch", 0)), config=cfg, model=model, head_classes=head_classes,
                   imported_from="facebookresearch/deepcluster")

    @classmethod
    def from_weights(cls, path: str | Path) -> "RunState":
        """The weights a run starts from (``--init``): a run directory or checkpoint of ours, a checkpoint of the
        reference implementation (:meth:`from_original`), or a torchvision state dict of a network we have
        (:func:`~deepcluster.models.original.convert_torchvision`: vgg16_bn, no head, at 224 px). Its config says
        the network they fit. One ConfigError line for anything else."""
        path = checkpoint_path(path)
        if not path.exists():
            raise ConfigError(f"--init {path} does not exist: give a run directory, a checkpoint of ours or of the "
                              f"reference DeepCluster code, or a torchvision state dict")
        obj = load_weights_only(path)
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            return cls.from_dict(obj, source=str(path))
        if isinstance(obj, dict) and ("state_dict" in obj or "top_layer.weight" in obj
                                      or any("module." in str(k) for k in obj)):
            return cls.from_original(obj, str(path))
        arch, model = convert_torchvision(obj, str(path))
        cfg = resolve(Config(data="", recipe="paper", arch=arch, sobel=False, image_size=224))
        return cls(epoch=0, config=cfg, model=model, head_classes=0, imported_from=f"torchvision ({path.name})")

    def without_bank(self) -> "RunState":
        """This state less the memory bank, which only rank 0 uses: what the other processes are sent."""
        return dataclasses.replace(self, bank=None)


def checkpoint_path(path: str | Path) -> Path:
    """A run directory's checkpoint, or ``path`` itself when it names a file."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path
