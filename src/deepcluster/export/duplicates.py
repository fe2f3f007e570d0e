"""Duplicates among a run's training images, searched exactly within clusters (SemDeDup's idea, Abbas et al.
2023: the cost grows with the sum of the squared cluster sizes, not with N squared), and the groups they link.

Two kinds, two signatures:

- **copies** (the default): the same picture at another size or encoding. The network cannot tell them from
  overlapping crops of one scene, since training makes its features invariant to crops, and the centre view it
  reads drops part of a non-square image. Copies are therefore compared by the whole image: grey, box-averaged to
  8 x 8, its mean removed (an average hash's input, compared by correlation rather than bits), and a pair must
  keep its aspect ratio. Each image is compared with the members of its ``probe`` nearest clusters, as an IVF
  index probes several lists, so a copy that lands in the next cluster is still found.
- **features**: pairs whose features (the clustering space, or the fc output) are close: SemDeDup's semantic
  duplicates, many of which are different photographs of one thing.

benchmarks/duplicates.py measures both on a folder with planted copies.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import connected_components
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.adapt import LUMA
from ..data.folder import read_rgb
from ..features import centre_view_features
from ..preprocess import l2_normalize
from ..rundir import FEATURES
from ..session import Images, open_run
from ..settings import ConfigError
from ..space import embed, nearest_clusters
from .table import Output, Shown, Source, image_names, refuse_existing, requested_groups, write_rows

KINDS = ("copies", "features")
SPACES = ("fc", "clustering")
THRESHOLD = {"copies": 0.98, "features": 0.9}  # defaults; benchmarks/duplicates.py sweeps them
SIDE = 8  # the copy signature's thumbnail: SIDE x SIDE grey levels
BLANK = 0.5  # a thumbnail whose grey levels spread less than this (std, of 255) is a blank image
ASPECT = 1.1  # copies keep their aspect ratio: width / height at most 10 % apart
BLOCK = 4096  # rows of a cluster compared at once: BLOCK x cluster size similarities in memory


class Thumbnails(Dataset):
    """Image i whole (not the network's centre crop), grey by luma, box-averaged to ``side x side``: float32
    ``(side * side,)``. Files are read again from the folder (JPEG decoding at a reduced scale when the file is
    large); images held in memory are pooled."""

    def __init__(self, dataset, side: int = SIDE):
        self.dataset, self.side, self.files = dataset, side, getattr(dataset, "files", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        from PIL import Image

        if self.files is None:
            x = self.dataset[i][0].float()
            if len(x) == 3:
                x = (torch.tensor(LUMA)[:, None, None] / 1000 * x).sum(0, keepdim=True)
            return F.adaptive_avg_pool2d(x[None], self.side).flatten(), i
        grey = read_rgb(self.files[i], draft=16 * self.side).convert("L")
        return torch.from_numpy(np.asarray(grey.resize((self.side, self.side), Image.BOX), np.float32).ravel()), i


def copy_signatures(dataset, workers: Optional[int] = None, desc: Optional[str] = None) -> tuple[np.ndarray, ...]:
    """``(signatures (N, SIDE * SIDE + 1), means (N,), aspects (N,))``: each image's mean-removed thumbnail
    (:class:`Thumbnails`), L2-normalised, so that the dot product of two is their correlation; a blank image's
    signature is the last axis alone, so that blank images match each other (:func:`copy_pairs` then asks for equal
    grey levels). ``aspects``: width / height from the files' headers (1 for images held in memory)."""
    if workers is None:
        workers = 0 if getattr(dataset, "files", None) is None else min(8, len(os.sched_getaffinity(0)))
    loader = DataLoader(Thumbnails(dataset), batch_size=256, num_workers=workers)
    thumbs = np.empty((len(dataset), SIDE * SIDE), np.float32)
    for t, idx in tqdm(loader, desc=desc, leave=False, disable=True if desc is None else None, unit="batch"):
        thumbs[idx.numpy()] = t.numpy()
    means = thumbs.mean(1)
    centred = thumbs - means[:, None]
    blank = centred.std(1) < BLANK
    sig = np.concatenate([l2_normalize(centred), blank[:, None].astype(np.float32)], axis=1)
    sig[blank, :-1] = 0
    sizes = getattr(dataset, "sizes", None)
    aspects = np.ones(len(dataset)) if sizes is None else np.array([w / h for w, h in sizes], np.float64)
    return sig, means, aspects


def similar_pairs(x: np.ndarray, labels: np.ndarray, threshold: float, probes: Optional[np.ndarray] = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)`` with ``i < j`` for every pair of rows of the same cluster whose cosine similarity is
    at least ``threshold``, most similar first. With ``probes`` (``(N, p)``: each row's p nearest clusters) a row
    is also compared with every member of the other clusters it probes. Exact: every such pair is computed."""
    x = l2_normalize(np.asarray(x, dtype=np.float32))
    found = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        queries = members if probes is None else \
            np.concatenate([members, np.flatnonzero((probes == c).any(1) & (labels != c))])
        for s in range(0, len(queries), BLOCK):
            rows = queries[s:s + BLOCK]
            sim = x[rows] @ x[members].T
            a, b = np.nonzero(sim >= threshold)
            i, j = rows[a], members[b]
            keep = (i < j) | (labels[i] != c)  # a pair of members once; a visitor with every member
            found.append((np.minimum(i, j)[keep], np.maximum(i, j)[keep], sim[a, b][keep]))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, s = (np.concatenate(p) for p in zip(*found))
    _, first = np.unique(i * len(x) + j, return_index=True)  # a pair both rows probe is found twice
    i, j, s = i[first], j[first], s[first]
    order = np.argsort(-s, kind="stable")
    return i[order], j[order], s[order]


def compared_pairs(labels: np.ndarray, probes: Optional[np.ndarray] = None) -> int:
    """How many pairs :func:`similar_pairs` computes (a pair both rows probe counted twice)."""
    sizes = np.bincount(labels)
    n = int((sizes * (sizes - 1) // 2).sum())
    if probes is not None:
        n += int(sizes[probes[probes != labels[:, None]]].sum())
    return n


def copy_pairs(sig: np.ndarray, means: np.ndarray, aspects: np.ndarray, labels: np.ndarray, threshold: float,
               probes: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`similar_pairs` of the copy signatures (:func:`copy_signatures`), kept when the two keep one aspect
    ratio (within ``ASPECT``) and, for two blank images, one grey level (within 2)."""
    i, j, s = similar_pairs(sig, labels, threshold, probes)
    same_shape = np.abs(np.log(aspects[i] / aspects[j])) <= np.log(ASPECT)
    blank = (sig[i, -1] > 0) & (sig[j, -1] > 0)
    keep = same_shape & (~blank | (np.abs(means[i] - means[j]) <= 2))
    return i[keep], j[keep], s[keep]


def duplicate_groups(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Group id of each of ``n`` images linked by the pairs ``(i, j)`` (connected components), -1 for an image in
    no pair; groups numbered by their first image."""
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    linked = np.zeros(n, bool)
    linked[i], linked[j] = True, True
    groups = np.full(n, -1, np.int64)
    _, first = np.unique(comp[linked], return_inverse=True)
    groups[linked] = first
    return groups


def _in_space(run, c, progress: bool) -> np.ndarray:
    """The training images in the space of the clustering ``c``: the run's final features when training kept
    them in that space (read, not computed again: a pass of the network over every image saved), else embedded."""
    kept = run.run_dir / FEATURES
    if kept.is_file() and run.state.clustering is not None and c.space == run.state.clustering.space:
        x = np.load(kept, mmap_mode="r")
        if len(x) == len(run.train_set):
            return x
    return embed(run.model, run.train_set, c, run.device, run.reading("features" if progress else None))


def find_duplicates(source: Source | str | Path, threshold: Optional[float] = None, by: str = "copies",
                    space: Optional[str] = None, probe: int = 2, output: Output = Output(),
                    shown: Shown = Shown()) -> dict:
    """Write the pairs (``RUN_DIR/duplicates.csv``: image_a, image_b, similarity, cluster) and the groups
    (``...-groups.csv``: group, image) of a run's training images. ``by``: "copies" (whole-image signatures,
    default threshold 0.98) or "features" (default 0.9) in ``space``: "clustering" (the run's: PCA-whitened + L2
    for v1; the default) or "fc" (L2-normalised: after training these are nearly collinear within a cluster, so
    far more pairs pass). ``probe``: the nearest clusters each image is compared in (1: its own only);
    ``shown``: other groups to search within than the training's (:func:`requested_groups`)."""
    if by not in KINDS:
        raise ConfigError(f"unknown kind of duplicates '{by}': choose one of {', '.join(KINDS)}")
    threshold = THRESHOLD[by] if threshold is None else threshold
    if not 0 < threshold <= 1:
        raise ConfigError(f"--threshold {threshold}: a similarity in (0, 1]")
    if space is not None and (by != "features" or space not in SPACES):
        raise ConfigError(f"--space {space}: the space of --by features, one of {', '.join(SPACES)}")
    if probe < 1:
        raise ConfigError(f"--probe {probe}: the number of nearest clusters to search, 1 or more")
    source, overwrite, progress = Source.of(source), output.overwrite, output.progress
    run = open_run(source.run_dir, source.device, Images(source.data, data_root=source.data_root, whole=False,
                                                         cache=False))
    out = refuse_existing(output.out or run.run_dir / "duplicates.csv", overwrite)
    groups_out = refuse_existing(out.with_name(out.stem + "-groups" + out.suffix), overwrite)
    chosen = requested_groups(run, shown)
    c = chosen.clustering
    ds, cfg, labels = run.train_set, run.cfg, c.labels[0]
    space, x = space or "clustering", None
    if probe > 1 or (by, space) == ("features", "clustering"):
        x = _in_space(run, c, progress)
    probes = None if probe == 1 else nearest_clusters(x, c.centroids[0], probe)
    if by == "copies":
        sig, means, aspects = copy_signatures(ds, cfg.workers, "thumbnails" if progress else None)
        i, j, s = copy_pairs(sig, means, aspects, labels, threshold, probes)
    else:
        if space == "fc":
            x = centre_view_features(run.model, ds, run.device, run.reading("fc features" if progress else None))
        i, j, s = similar_pairs(x, labels, threshold, probes)
    names = image_names(ds)
    write_rows([{"image_a": names[a], "image_b": names[b], "similarity": round(float(v), 6),
                 "cluster": int(labels[a])} for a, b, v in zip(i, j, s)], out,
               fields=("image_a", "image_b", "similarity", "cluster"))
    groups = duplicate_groups(len(ds), i, j)
    members = np.flatnonzero(groups >= 0)
    by_group = members[np.argsort(groups[members], kind="stable")]
    write_rows([{"group": int(groups[m]), "image": names[m]} for m in by_group], groups_out, fields=("group", "image"))
    return {"by": by, "threshold": threshold, "pairs": int(len(i)), "groups": int(groups.max() + 1),
            "images_in_groups": int(len(members)), "compared": compared_pairs(labels, probes),
            "all_pairs": len(ds) * (len(ds) - 1) // 2, "table": str(out), "groups_table": str(groups_out),
            "shown": chosen.description, "choice": chosen.choice}
