"""One folder per cluster, largest first, of links to (or copies of) its images, most central first: what a person
opens in a file browser or hands to annotators. Written beside the data, never into it, and all at once (built in a
temporary folder, then moved into place)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from ..settings import ConfigError

MARKER = ".deepcluster-clusters"  # what makes a folder ours to replace with --overwrite


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_folders_out(out: str | Path, overwrite: bool, dataset) -> Path:
    """``out`` if it may be written: not inside ``dataset``'s folder, and new (or, with ``overwrite``, a folder
    this command wrote before)."""
    out = Path(out)
    data_root = Path(dataset.root) if hasattr(dataset, "root") else None
    if data_root is not None and _inside(out, data_root):
        raise ConfigError(f"{out} lies inside the data folder {data_root}: choose a folder outside it (the data is "
                          f"never written to)")
    if out.exists():
        if not overwrite:
            raise ConfigError(f"{out} exists: choose another folder or pass --overwrite to replace it")
        if not (out / MARKER).is_file():
            raise ConfigError(f"{out} exists and was not written by 'deepcluster export': it is left as it is; "
                              f"choose another folder")
    return out


def write_cluster_folders(out: str | Path, dataset, labels: np.ndarray, ranks: np.ndarray, copy: bool = False,
                          overwrite: bool = False, items: Optional[np.ndarray] = None) -> dict:
    """Lay out ``out/<order>_cluster-<id>_<size>/<rank>_<name>``: folders by size (largest first), images by
    ``ranks`` (1 = nearest the centroid). An image folder's files are linked (absolute symbolic links) or, with
    ``copy``, copied; the built-in dataset's images are written as PNG files. ``items`` restricts it to those
    images. Returns ``{"folders": ..., "images": ..., "how": "links" | "copies" | "png"}``."""
    files = getattr(dataset, "files", None)
    out = check_folders_out(out, overwrite, dataset)
    items = np.arange(len(labels)) if items is None else np.asarray(items)
    sizes = np.bincount(labels[items], minlength=int(labels.max()) + 1)
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    wf, wr = len(str(len(order))), len(str(int(ranks[items].max())))
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / MARKER).write_text("written by deepcluster export; --overwrite may replace this folder\n")
    how = "png" if files is None else "copies" if copy else "links"
    by_cluster = {c: items[labels[items] == c] for c in order}
    for n, c in enumerate(order, 1):
        folder = tmp / f"{n:0{wf}d}_cluster-{c}_{sizes[c]}"
        folder.mkdir()
        for i in by_cluster[c]:
            prefix = f"{ranks[i]:0{wr}d}_"
            if files is None:
                from PIL import Image

                a = dataset[int(i)][0].numpy()
                Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(folder / f"{prefix}{i}.png")
            elif copy:
                shutil.copy2(files[i], folder / (prefix + Path(files[i]).name))
            else:
                os.symlink(Path(files[i]).resolve(), folder / (prefix + Path(files[i]).name))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"folders": len(order), "images": int(len(items)), "how": how, "out": str(out)}
