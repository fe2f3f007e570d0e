"""Image grids: a sample of clusters, a row of member images each."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..rundir import atomic_write


def cluster_grid(images: list[list[torch.Tensor]], captions: list[str], cell: int = 48) -> Image.Image:
    """One row per cluster: a caption, then its ``uint8 (C, S, S)`` images scaled to ``cell`` px."""
    cols = max((len(r) for r in images), default=1)
    label_w = 150
    pad = 2
    out = Image.new("RGB", (label_w + cols * (cell + pad), len(images) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(out)
    for r, (row, cap) in enumerate(zip(images, captions)):
        y = pad + r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), cap, fill="black")
        for c, img in enumerate(row):
            arr = img.numpy()
            arr = np.repeat(arr, 3, 0) if arr.shape[0] == 1 else arr[:3]
            tile = Image.fromarray(arr.transpose(1, 2, 0)).resize((cell, cell), Image.NEAREST
                                                                  if arr.shape[1] < cell else Image.BILINEAR)
            out.paste(tile, (label_w + c * (cell + pad), y))
    return out


def save_cluster_grid(dataset, assignment: np.ndarray, path: str | Path, n_clusters: int = 12,
                      per_cluster: int = 12, seed: int = 0) -> None:
    """A grid of ``per_cluster`` random members for ``n_clusters`` clusters drawn at random (weighted by size);
    captions give the cluster size and, when the dataset has labels, its most common label and its share."""
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(assignment, return_counts=True)
    pick = rng.choice(ids, min(n_clusters, len(ids)), replace=False, p=counts / counts.sum())
    rows, caps = [], []
    for j in sorted(pick, key=lambda j: -counts[ids == j][0]):
        members = np.flatnonzero(assignment == j)
        chosen = rng.choice(members, min(per_cluster, len(members)), replace=False)
        rows.append([dataset[int(i)][0] for i in chosen])
        cap = f"cluster {j}  n={len(members)}"
        if dataset.targets is not None:
            lab, cnt = np.unique(dataset.targets[members], return_counts=True)
            top = lab[cnt.argmax()]
            name = dataset.classes[top] if len(dataset.classes) > top else str(top)
            cap += f"\n{name[:14]} {cnt.max() / len(members):.0%}"
        caps.append(cap)
    img = cluster_grid(rows, caps)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
