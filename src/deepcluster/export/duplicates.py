"""Near duplicates: pairs of training images whose features' cosine similarity reaches a threshold, searched
exactly within each cluster (SemDeDup's idea, Abbas et al. 2023: the cost grows with the sum of the squared
cluster sizes, not with N squared), and the groups they link."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..clusters import embed
from ..config import ConfigError
from ..device import amp_dtype
from ..features import centre_view_features
from ..preprocess import l2_normalize
from ..session import open_run
from .table import image_names, refuse_existing, run_clustering, write_rows

SPACES = ("fc", "clustering")
BLOCK = 4096  # rows of a cluster compared at once: BLOCK x cluster size similarities in memory


def similar_pairs(x: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)`` with ``i < j`` for every pair of rows of the same cluster whose cosine similarity is
    at least ``threshold``: each cluster's rows compared with each other, exactly."""
    x = l2_normalize(np.asarray(x, dtype=np.float32))
    found = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        for s in range(0, len(idx) - 1, BLOCK):
            rows = idx[s:s + BLOCK]
            sim = x[rows] @ x[idx].T
            a, b = np.nonzero(sim >= threshold)
            keep = rows[a] < idx[b]
            found.append((rows[a][keep], idx[b][keep], sim[a, b][keep]))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, s = (np.concatenate(p) for p in zip(*found))
    order = np.argsort(-s, kind="stable")
    return i[order], j[order], s[order]


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


def find_duplicates(run_dir: str | Path, threshold: float = 0.9, out: Optional[str | Path] = None,
                    space: str = "clustering", overwrite: bool = False, device: str = "auto",
                    data: Optional[str] = None, data_root: Optional[str] = None, progress: bool = True) -> dict:
    """Write the pairs (``RUN_DIR/duplicates.csv``: image_a, image_b, similarity, cluster) and the groups
    (``...-groups.csv``: group, image) of a run's training images. ``space``: "clustering" (the run's clustering
    space: PCA-whitened + L2 for v1) or "fc" (the fc features, L2-normalised: after training they are nearly
    collinear within a cluster, so far more pairs pass; benchmarks/duplicates.py)."""
    if not 0 < threshold <= 1:
        raise ConfigError(f"--threshold {threshold}: a cosine similarity in (0, 1]")
    if space not in SPACES:
        raise ConfigError(f"unknown space '{space}': choose one of {', '.join(SPACES)}")
    run = open_run(run_dir, data, data_root=data_root, device=device, whole_data=False, cache=False)
    c = run_clustering(run)
    out = refuse_existing(out or run.run_dir / "duplicates.csv", overwrite)
    groups_out = refuse_existing(out.with_name(out.stem + "-groups" + out.suffix), overwrite)
    ds, cfg = run.train_set, run.cfg
    amp, desc = amp_dtype(cfg.precision, run.device), "duplicates" if progress else None
    if space == "fc":
        x = centre_view_features(run.model, ds, run.device, cfg.batch_size, cfg.workers, amp, desc=desc, alone=True)
    else:
        x = embed(run.model, ds, c, run.device, cfg.batch_size, cfg.workers, amp, desc=desc, alone=True)
    labels = c.labels[0]
    i, j, s = similar_pairs(x, labels, threshold)
    names = image_names(ds)
    write_rows([{"image_a": names[a], "image_b": names[b], "similarity": round(float(v), 6),
                 "cluster": int(labels[a])} for a, b, v in zip(i, j, s)], out,
               fields=("image_a", "image_b", "similarity", "cluster"))
    groups = duplicate_groups(len(ds), i, j)
    members = np.flatnonzero(groups >= 0)
    by_group = members[np.argsort(groups[members], kind="stable")]
    write_rows([{"group": int(groups[m]), "image": names[m]} for m in by_group], groups_out, fields=("group", "image"))
    sizes = np.bincount(labels)
    return {"pairs": int(len(i)), "groups": int(groups.max() + 1), "images_in_groups": int(len(members)),
            "compared": int((sizes * (sizes - 1) // 2).sum()), "all_pairs": len(ds) * (len(ds) - 1) // 2,
            "table": str(out), "groups_table": str(groups_out)}
