"""New images placed in a run's learned clusters: the trained network's features of each, in the run's clustering
space, and its nearest centroid; the distance says how well it fits."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..data import fashion_mnist, load_size_for, open_folder
from ..data.adapt import for_network
from ..session import Images, SavedRun, open_run
from ..settings import ConfigError
from ..space import embed, nearest
from .table import Output, Shown, Source, cluster_rows, image_names, refuse_existing, requested_groups, write_rows


def open_images(run: SavedRun, data: str, data_root: Optional[str] = None):
    """``data`` (a folder of images, or ``fashion-mnist`` / ``fashion-mnist:test``) as the run's network reads
    it: at its input size, with its number of channels and its normalisation. Returns ``(dataset, note)``, the
    note saying what was converted ("" when nothing)."""
    size = run.model.image_size
    if data.split(":")[0] == "fashion-mnist":
        split = data.split(":")[1] if ":" in data else "train"
        if split not in ("train", "test"):
            raise ConfigError(f"unknown split '{split}' of fashion-mnist: use fashion-mnist:train or :test")
        ds = fashion_mnist(split, data_root)
        if size != ds.load_size:
            raise ConfigError(f"fashion-mnist images are {ds.load_size} px and this network takes {size} px: give "
                              f"a folder of images instead")
    else:
        ds = open_folder(data, load_size_for(size))
    return for_network(ds, run.channels, run.mean, run.std)


def fit_quantiles(clustering, labels: np.ndarray, distances: np.ndarray, head: int = 0) -> np.ndarray:
    """For each image, the share of its cluster's training images that lie nearer the centroid: about 0.5 for a
    typical member, near 1 (or 1) for an image that fits the cluster worse than nearly all of its own."""
    train_labels, train_dist = clustering.labels[head], clustering.distances[head]
    q = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.sort(train_dist[train_labels == c])
        mine = labels == c
        q[mine] = np.searchsorted(members, distances[mine], side="right") / max(len(members), 1)
    return q


def assign_images(source: Source, output: Output = Output(), shown: Shown = Shown()) -> dict:
    """Place the images of ``source.data`` in the clusters of the run (``shown``: or in other groups drawn from
    them): a table like ``export``'s (``cluster``, ``distance``, ``rank`` among these images, the learned
    ``cluster_size``) with a ``fit`` column (see :func:`fit_quantiles`), written to ``output.out`` (default
    ``RUN_DIR/assigned.csv``)."""
    data, data_root, progress = source.data, source.data_root, output.progress
    if data is None:
        raise ConfigError("assign places new images: give them (--data FOLDER)")
    run = open_run(source.run_dir, source.device, Images(load=False))
    out = refuse_existing(output.out or run.run_dir / "assigned.csv", output.overwrite)
    groups = requested_groups(run, shown)
    c = groups.clustering
    ds, note = open_images(run, data, data_root)
    x = embed(run.model, ds, c, run.device, run.reading("assign" if progress else None))
    placed = [nearest(x, cen) for cen in c.centroids]
    labels, distances = [p[0] for p in placed], [p[1] for p in placed]
    rows = cluster_rows(image_names(ds), c, ds.targets, ds.classes, labels, distances)
    learned = np.bincount(c.labels[0], minlength=len(c.centroids[0]))
    for r, lab, q in zip(rows, labels[0], fit_quantiles(c, labels[0], distances[0])):
        r["cluster_size"], r["fit"] = int(learned[lab]), round(float(q), 4)
    write_rows(rows, out)
    return {"images": len(rows), "table": str(out), "shown": groups.description, "choice": groups.choice,
            "note": note,
            "clusters_used": int(len(np.unique(labels[0]))), "outside": int(sum(r["fit"] >= 1 for r in rows))}
