"""DeepCluster behind scikit-learn's estimator shape: ``DeepCluster(k=..., ...).fit(images)`` trains exactly as
``deepcluster train`` does and writes the same run folder; ``labels_`` and ``cluster_centers_`` are the trained
network's clustering, ``transform`` / ``predict`` place any images in it."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin

from .config import Config, ConfigError
from .data import TensorImages, load_size_for
from .data.adapt import for_network
from .session import Images, open_run
from .space import embed, nearest

# The training settings the estimator takes: every field of Config but the data (what ``fit`` is given) and the
# device (the estimator's own).
SETTINGS = {f.name: f.default for f in dataclasses.fields(Config) if f.name not in ("data", "device")}


class DeepCluster(ClusterMixin, BaseEstimator):
    """The training settings are :class:`~deepcluster.config.Config`'s fields (``k``, ``epochs``, ``arch``, ...),
    each a parameter of its own (``get_params`` lists them all, ``clone`` copies them); those left at None are the
    recipe's choice, as on the command line. An unknown one is refused here, at construction. The run is written
    to ``out``.

    ``clusters``: the groups that ``labels_``, ``cluster_centers_`` and ``predict`` give, when not the
    training's: a number K or "auto", drawn from the run's final features by ``grouping`` "kmeans" or "tree"
    (:mod:`deepcluster.export.groups`); ``groups_`` then says how they were obtained.

    Fitted attributes: ``labels_`` (N,), ``cluster_centers_`` (k, d) in the clustering space, ``run_dir_``,
    ``metrics_`` (one dict per epoch), ``evaluation_`` (the closing evaluation), ``model_`` (the network),
    ``groups_`` (:class:`~deepcluster.export.groups.Groups`)."""

    def __init__(self, out: str | Path = "runs/deepcluster", resume: bool = False, overwrite: bool = False,
                 device: str = "auto", quiet: bool = True, clusters=None, grouping: str = "kmeans", **settings):
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"DeepCluster has no setting {', '.join(map(repr, unknown))}: its settings are the "
                              f"options of 'deepcluster train --help', with _ for - (e.g. pca_dim)")
        self.out, self.resume, self.overwrite, self.device, self.quiet = out, resume, overwrite, device, quiet
        self.clusters, self.grouping = clusters, grouping
        for name, default in SETTINGS.items():
            setattr(self, name, settings.get(name, default))

    def fit(self, images: str | Path, y=None) -> "DeepCluster":
        """Train on ``images``: a folder of images or ``"fashion-mnist"``. ``y`` is ignored (no labels are used)."""
        from .train import train

        if not isinstance(images, (str, Path)):
            raise ConfigError(f"fit takes a folder of images or 'fashion-mnist', not {type(images).__name__}")
        cfg = Config(data=str(images), device=self.device, **{name: getattr(self, name) for name in SETTINGS})
        summary = train(cfg, self.out, resume=self.resume, overwrite=self.overwrite, quiet=self.quiet)
        self.metrics_, self.evaluation_ = summary["metrics"], summary["eval"]
        return self._take(self.out)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", clusters=None, grouping: str = "kmeans"
             ) -> "DeepCluster":
        """The estimator of a run already trained (by ``fit`` or by ``deepcluster train``)."""
        est = cls(out=run_dir, device=device, clusters=clusters, grouping=grouping)
        est.metrics_, est.evaluation_ = None, None
        return est._take(run_dir)

    def _take(self, run_dir) -> "DeepCluster":
        from .export.groups import parse_clusters
        from .export.table import Shown, requested_groups

        clusters = parse_clusters(None if self.clusters is None else str(self.clusters))
        if clusters is None and self.grouping != "kmeans":
            raise ConfigError(f"grouping='{self.grouping}' draws the groups of clusters=: give clusters=K or 'auto'")
        self._run = open_run(run_dir, self.device, Images(load=False))
        self.groups_ = requested_groups(self._run, Shown(clusters, self.grouping))
        self._clustering = self.groups_.clustering
        self.run_dir_, self.model_ = self._run.run_dir, self._run.model
        self.labels_, self.cluster_centers_ = self._clustering.labels[0], self._clustering.centroids[0]
        return self

    def fit_predict(self, images: str | Path, y=None) -> np.ndarray:
        return self.fit(images).labels_

    def _dataset(self, images):
        from .export.assign import open_images

        run = self._run
        if isinstance(images, (str, Path)):
            return open_images(run, str(images))[0]
        x = torch.as_tensor(np.asarray(images))
        if x.dtype != torch.uint8 or x.ndim not in (3, 4):
            raise ConfigError("images: a folder, or uint8 pixels (N, H, W) or (N, C, H, W)")
        x = x[:, None] if x.ndim == 3 else x
        size = load_size_for(run.model.image_size)
        if x.shape[-1] != size or x.shape[-2] != size:
            raise ConfigError(f"images of {tuple(x.shape[-2:])} px: this network reads {size} x {size} (load "
                              f"size); resize them, or give a folder, which is resized for you")
        ds = TensorImages(x.contiguous(), mean=(0.5,) * x.shape[1], std=(0.5,) * x.shape[1], name="images")
        return for_network(ds, run.channels, run.mean, run.std)[0]

    def transform(self, images) -> np.ndarray:
        """``images`` (a folder, or uint8 pixels ``(N, [C,] H, W)`` at the network's load size) in the run's
        clustering space, ``(N, d)``."""
        run = self._run
        return embed(run.model, self._dataset(images), self._clustering, run.device, run.reading())

    def predict(self, images) -> np.ndarray:
        """The nearest learned centroid of each image."""
        return nearest(self.transform(images), self.cluster_centers_)[0]


# scikit-learn reads an estimator's parameters from its __init__'s signature: every setting is one
_own = list(inspect.signature(DeepCluster.__init__).parameters.values())[:-1]
DeepCluster.__init__.__signature__ = inspect.Signature(
    _own + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in SETTINGS.items()])

__all__ = ["DeepCluster"]
