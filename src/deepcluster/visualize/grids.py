"""Image grids: rows of images with a caption each (members of a cluster, top images of a filter, filters)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..rundir import atomic_write


def to_rgb(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """``uint8 (C, H, W)`` with any C -> ``uint8 (H, W, 3)``: 1 channel is grey, 2 channels fill red and green,
    3 stay, more keep their first three."""
    a = np.asarray(img)
    c = a.shape[0]
    if c == 1:
        a = np.repeat(a, 3, 0)
    elif c == 2:
        a = np.concatenate([a, np.zeros_like(a[:1])], 0)
    return np.ascontiguousarray(a[:3].transpose(1, 2, 0))


def image_rows(rows: list[list], captions: list[str], cell: int = 48, label_w: int = 150) -> Image.Image:
    """One row per caption: the caption (may hold a newline), then its ``uint8 (C, H, W)`` images, each scaled
    to a ``cell`` px square (nearest-neighbour when enlarging, so small images stay crisp)."""
    cols = max((len(r) for r in rows), default=1) or 1
    pad = 2
    out = Image.new("RGB", (label_w + cols * (cell + pad), max(len(rows), 1) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(out)
    for r, (row, cap) in enumerate(zip(rows, captions)):
        y = pad + r * (cell + pad)
        draw.multiline_text((4, y + max(0, cell // 2 - 12)), cap, fill="black")
        for c, img in enumerate(row):
            tile = Image.fromarray(to_rgb(img))
            tile = tile.resize((cell, cell), Image.NEAREST if max(tile.size) < cell else Image.BILINEAR)
            out.paste(tile, (label_w + c * (cell + pad), y))
    return out


def cluster_purity(assignment: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every cluster id ``0..max``: its size, its most common label and that label's share (0 when
    empty)."""
    k = int(assignment.max()) + 1
    n_labels = int(targets.max()) + 1
    table = np.zeros((k, n_labels), dtype=np.int64)
    np.add.at(table, (assignment, targets), 1)
    sizes = table.sum(1)
    return sizes, table.argmax(1), np.where(sizes > 0, table.max(1) / np.maximum(sizes, 1), 0.0)


def pick_clusters(assignment: np.ndarray, targets: Optional[np.ndarray], per_group: int = 4,
                  seed: int = 0) -> list[tuple[str, list[int]]]:
    """Which clusters to show: the largest; with labels, the purest and the most mixed (among clusters of at
    least 5 images); without labels, a random draw. Up to ``per_group`` each, fewer when there are not three
    groups' worth of clusters. Returns ``[(group name, cluster ids)]``, no id twice."""
    sizes = np.bincount(assignment)
    ids = np.flatnonzero(sizes)
    per_group = max(1, min(per_group, len(ids) // 3))  # few clusters: every group still gets some
    shown: set[int] = set()

    def take(order) -> list[int]:
        out = [int(j) for j in order if j not in shown][:per_group]
        shown.update(out)
        return out

    # The picky groups choose first, so that the largest clusters (any will do) never leave them empty.
    others = []
    if targets is not None:
        _, _, purity = cluster_purity(assignment, targets)
        big = ids[sizes[ids] >= min(5, sizes.max())]
        purest = take(big[np.argsort(-purity[big], kind="stable")])
        mixed = take(big[np.argsort(purity[big], kind="stable")])
        others = [("purest", purest), ("most mixed", mixed)]
    largest = take(ids[np.argsort(-sizes[ids], kind="stable")])
    if targets is None:
        others = [("random", take(np.random.default_rng(seed).permutation(ids)))]
    return [(name, g) for name, g in [("largest", largest)] + others if g]


def cluster_rows(dataset, assignment: np.ndarray, clusters: list[int], per_cluster: int = 12,
                 seed: int = 0) -> tuple[list[list[torch.Tensor]], list[str]]:
    """Random members (up to ``per_cluster``) of each cluster and a caption: its id and size and, when the
    dataset has labels, its most common label and that label's share."""
    rng = np.random.default_rng(seed)
    rows, caps = [], []
    for j in clusters:
        members = np.flatnonzero(assignment == j)
        chosen = np.sort(rng.choice(members, min(per_cluster, len(members)), replace=False))
        rows.append([dataset[int(i)][0] for i in chosen])
        cap = f"cluster {j}  n={len(members)}"
        if dataset.targets is not None:
            lab, cnt = np.unique(dataset.targets[members], return_counts=True)
            top = int(lab[cnt.argmax()])
            name = dataset.classes[top] if len(dataset.classes) > top else str(top)
            cap += f"\n{name[:16]} {cnt.max() / len(members):.0%}"
        caps.append(cap)
    return rows, caps


def save_cluster_grid(dataset, assignment: np.ndarray, path: str | Path, n_clusters: int = 12,
                      per_cluster: int = 12, seed: int = 0) -> None:
    """A grid of ``per_cluster`` random members for ``n_clusters`` clusters drawn at random (weighted by size),
    largest first."""
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(assignment, return_counts=True)
    pick = rng.choice(ids, min(n_clusters, len(ids)), replace=False, p=counts / counts.sum())
    pick = sorted(pick, key=lambda j: -counts[ids == j][0])
    img = image_rows(*cluster_rows(dataset, assignment, pick, per_cluster, seed))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
