"""The groups a user asks for, drawn from a finished run without training again: any number K of clusters, a tree
to cut at any K, and an estimate of how many groups the folder holds.

Everything starts from the run's final features (``RUN_DIR/features.npy``: every training image in the run's
clustering space, what the final clustering clustered). The training's own clustering stays what it is; asking
for its k gives it back. Every result is kept in ``RUN_DIR/groups/`` and read back by the next call that asks for
the same thing (a run that is resumed and finishes again drops them with the features they came from):

- ``kmeans-K.npz``: k-means at K (best of ``RESTARTS`` k-means++ starts, seeded by the run's seed);
- ``tree.npz``: the leaves (:func:`~deepcluster.clustering.hierarchy.leaf_count` k-means clusters, fitted on at
  most ``LEAF_SAMPLE`` points per leaf and every image placed at its nearest leaf) and Ward's tree over them;
- ``auto-CRITERION.json``: the curve over K and the K it points to
  (:func:`~deepcluster.clustering.number.choose_k`).

A group request is ``K`` or ``auto``, with ``grouping`` "kmeans" or "tree"; the answer is a :class:`Groups`, whose
``clustering`` is a one-head :class:`~deepcluster.state.RunClustering` in the run's space, so every export,
placement and picture that takes the run's clustering takes it alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp

from ..clustering import KMeans
from ..clustering.hierarchy import cut, leaf_count, ward_tree
from ..clustering.number import CRITERIA, Choice, choose_k
from ..rundir import FEATURES, GROUPS, RunDir, atomic_write
from ..settings import ConfigError
from ..space import nearest
from ..state import RunClustering

GROUPINGS = ("kmeans", "tree")
RESTARTS = 10  # k-means at K: the lowest objective of 10 k-means++ starts, as the closing evaluation scores
LEAF_SAMPLE = 256  # points per leaf the leaves' k-means is fitted on (faiss's own default cap); all are placed
AUTO_MIN = 20  # images an estimate of K needs at least
CRITERION = "silhouette"  # benchmarks/groups.py measures the criteria on labelled folders
CHUNK = 65536  # rows of the features read at once
FORMAT = 2  # what is kept in RUN_DIR/groups: a kept file of another format is computed again

Request = Union[int, str]


def parse_clusters(spec: Optional[str]) -> Optional[Request]:
    """``--clusters`` as given: None, ``"auto"`` or an int; one ConfigError line otherwise."""
    if spec is None or spec == "auto":
        return spec
    try:
        k = int(spec)
    except ValueError:
        raise ConfigError(f"--clusters {spec}: give a number of groups (e.g. 20) or 'auto'") from None
    if k < 2:
        raise ConfigError(f"--clusters {k}: ask for at least 2 groups")
    return k


def parse_levels(spec: Optional[str]) -> list[int]:
    """``--levels 5,20,100`` as sorted distinct ints >= 2; one ConfigError line otherwise."""
    if not spec:
        return []
    try:
        levels = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        raise ConfigError(f"--levels {spec}: give numbers of groups separated by commas, e.g. 5,20,100") from None
    if not levels or levels[0] < 2:
        raise ConfigError(f"--levels {spec}: every level needs at least 2 groups")
    return levels


@dataclass
class Groups:
    """What a request gave: ``k`` groups, ``how`` ("training", "kmeans" or "tree"), a sentence saying how they
    were obtained, the groups as a one-head ``clustering``, and for ``auto`` the ``choice`` (the curve)."""

    k: int
    how: str
    description: str
    clustering: RunClustering
    choice: Optional[Choice] = None

    @property
    def labels(self) -> np.ndarray:
        return self.clustering.labels[0]


@dataclass
class Tree:
    """The tree over a run's images: each image's leaf ``leaf_of (N,)``, the leaves' ``centroids (L, d)`` and
    ``sizes (L,)``, and Ward's merges ``z (L - 1, 4)`` (scipy's linkage format)."""

    leaf_of: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    z: np.ndarray

    @property
    def leaves(self) -> int:
        return len(self.centroids)

    def labels(self, k: int) -> np.ndarray:
        """Each image's group when the tree is cut into ``k`` groups (numbered largest first)."""
        if k > self.leaves:
            raise ConfigError(f"the tree has {self.leaves} leaves, so it cuts into at most {self.leaves} groups, "
                              f"not {k}: ask for fewer, or for k-means at {k} (--grouping kmeans)")
        return cut(self.z, k, self.sizes)[self.leaf_of]


class RunGroups:
    """The groups of one run: its final features, and what was drawn from them (kept in ``RUN_DIR/groups``).
    ``k``: the training's main k, ``clustering``: the training's own clustering, ``seed``: the run's."""

    def __init__(self, run_dir: str | Path, clustering: RunClustering, k: int, seed: int = 0):
        self.run = RunDir(run_dir)
        self.clustering, self.k, self.seed = clustering, k, seed
        path = self.run / FEATURES
        if not path.is_file():
            raise ConfigError(f"{self.run.path} has no final features ({FEATURES}), which other numbers of groups "
                              f"are drawn from: it has not finished, or it was trained before runs kept them; "
                              f"'deepcluster train --config {self.run / 'config.yaml'} --out {self.run.path} "
                              f"--resume' writes them")
        self.features = np.load(path, mmap_mode="r")
        if len(self.features) != len(clustering.labels[0]):
            raise ConfigError(f"{path} holds {len(self.features)} images but the run clustered "
                              f"{len(clustering.labels[0])}: resume the run to write them again")

    @property
    def n(self) -> int:
        return len(self.features)

    # ---- what is kept in RUN_DIR/groups
    def _load(self, name: str) -> Optional[dict]:
        path = self.run / GROUPS / name
        if not path.is_file():
            return None
        if path.suffix == ".json":
            kept = json.loads(path.read_text())
            return kept if kept.get("format") == FORMAT and kept.get("images") == self.n else None
        with np.load(path) as f:
            kept = dict(f)
        ok = kept.get("format") == FORMAT and len(kept.get("labels", kept.get("leaf_of"))) == self.n
        return kept if ok else None

    def _keep(self, name: str, write) -> None:
        (self.run / GROUPS).mkdir(parents=True, exist_ok=True)
        atomic_write(self.run / GROUPS / name, write)

    def _keep_arrays(self, name: str, **arrays) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a temporary name
                np.savez(f, format=FORMAT, **arrays)

        self._keep(name, write)

    # ---- the three things drawn from the features
    def kmeans(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k-means at ``k``: ``(labels (N,), centroids (k, d))``."""
        kept = self._load(f"kmeans-{k}.npz")
        if kept is None:
            km = KMeans(k, n_iter=20, seed=self.seed, init="k-means++", n_init=RESTARTS).fit(self.features)
            kept = {"labels": km.labels_, "centroids": km.cluster_centers_.astype(np.float32)}
            self._keep_arrays(f"kmeans-{k}.npz", **kept)
        return kept["labels"].astype(np.int64), kept["centroids"]

    def tree(self) -> Tree:
        kept = self._load("tree.npz")
        if kept is None:
            x, L = self.features, leaf_count(self.n, self.k)
            own = np.asarray(self.clustering.labels[0])
            if L == self.k and own.max() < L:
                # as many leaves as the training's clusters (a large run): its own k-means of these very
                # features, not a second one (at 1M images and k = 7,629 that was 9 minutes of the report)
                leaf_of = own.astype(np.int64)
            else:
                rng = np.random.default_rng([self.seed, L])
                sample = np.sort(rng.choice(self.n, LEAF_SAMPLE * L, replace=False)) if self.n > LEAF_SAMPLE * L \
                    else slice(None)
                km = KMeans(L, n_iter=20, seed=self.seed, init="k-means++").fit(np.asarray(x[sample]))
                leaf_of, _ = nearest(x, km.cluster_centers_)
            sizes = np.bincount(leaf_of, minlength=L)
            if (sizes == 0).any():  # a leaf of the sample that no image is nearest to: drop it
                used = np.flatnonzero(sizes)
                leaf_of = np.searchsorted(used, leaf_of)
                sizes = sizes[used]
            centroids = group_means(x, leaf_of, len(sizes))
            kept = {"leaf_of": leaf_of, "centroids": centroids.astype(np.float32), "sizes": sizes,
                    "z": ward_tree(centroids, sizes)}
            self._keep_arrays("tree.npz", **kept)
        return Tree(kept["leaf_of"].astype(np.int64), kept["centroids"], kept["sizes"], kept["z"])

    def choice(self, criterion: str = CRITERION) -> Choice:
        """How many groups the tree's cuts say the images form (see :func:`choose_k`)."""
        if criterion not in CRITERIA:
            raise ConfigError(f"unknown criterion '{criterion}': choose one of {', '.join(CRITERIA)}")
        if self.n < AUTO_MIN:
            raise ConfigError(f"--clusters auto needs at least {AUTO_MIN} images to score a number of groups; this "
                              f"run has {self.n}: give a number instead")
        kept = self._load(f"auto-{criterion}.json")
        if kept is None:
            t = self.tree()
            c = choose_k(self.features, t.leaf_of, t.z, t.sizes, criterion, self.seed)
            kept = {**c.to_dict(), "images": self.n, "format": FORMAT}
            self._keep(f"auto-{criterion}.json", lambda tmp: Path(tmp).write_text(json.dumps(kept) + "\n"))
        return Choice(kept["criterion"], kept["ks"], kept["scores"], kept["noise"], kept["k"], kept["low"],
                      kept["high"], kept["flat"], kept["best"])

    # ---- a request answered
    def groups(self, clusters: Request, grouping: str = "kmeans", criterion: str = CRITERION) -> Groups:
        """The groups of ``clusters`` (a number, or "auto") drawn by k-means or by cutting the tree (``grouping``)."""
        if grouping not in GROUPINGS:
            raise ConfigError(f"--grouping {grouping}: choose one of {', '.join(GROUPINGS)}")
        choice = None
        if clusters == "auto":
            choice = self.choice(criterion)
            k = choice.k
        else:
            k = int(clusters)
            if k < 2 or k > self.n:
                raise ConfigError(f"--clusters {k}: ask for 2 to {self.n} groups (the run has {self.n} images)")
        chosen = f"K = {k} estimated by {choice.criterion} over K = {choice.ks[0]}-{choice.ks[-1]}: " \
                 f"{choice.describe()}; " if choice else ""
        if grouping == "kmeans" and k == len(self.clustering.centroids[0]):
            c = self.clustering
            head = replace(c, centroids=c.centroids[:1], labels=c.labels[:1], distances=c.distances[:1])
            return Groups(k, "training", chosen + f"the training's own clustering (k = {k})", head, choice)
        if grouping == "kmeans":
            labels, centroids = self.kmeans(k)
            how = f"k-means at K = {k} on the run's final features (best of {RESTARTS} starts)"
        else:
            t = self.tree()
            labels = t.labels(k)
            centroids = group_means(self.features, labels, k)
            how = f"the tree of {t.leaves} leaves cut at K = {k}"
        return Groups(k, grouping, chosen + how, self.one_head(labels, centroids), choice)

    def one_head(self, labels: np.ndarray, centroids: np.ndarray) -> RunClustering:
        """``labels`` as a clustering of the run's space: the distances are to each image's own centroid."""
        distances = np.empty(self.n, np.float32)
        for s in range(0, self.n, CHUNK):
            diff = np.asarray(self.features[s:s + CHUNK], np.float64) - centroids[labels[s:s + CHUNK]]
            distances[s:s + CHUNK] = np.sqrt((diff * diff).sum(1))
        return replace(self.clustering, centroids=[np.asarray(centroids, np.float32)], labels=[labels],
                       distances=[distances])


def group_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The mean of each group's rows, ``(k, d)`` float32 (zeros for an empty group), summed in float64 a block
    of rows at a time (``x`` may be a memory map larger than memory)."""
    sums = np.zeros((k, x.shape[1]))
    for s in range(0, len(x), CHUNK):
        lab = labels[s:s + CHUNK]
        onehot = sp.csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))), shape=(k, len(lab)))
        sums += onehot @ np.asarray(x[s:s + CHUNK], np.float64)
    return (sums / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]).astype(np.float32)
