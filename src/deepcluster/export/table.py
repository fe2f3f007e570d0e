"""One row per image: its name, cluster, distance to the centroid, rank in its cluster, the cluster's size, and
its label when labels exist; written as CSV or JSON lines."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..rundir import atomic_write
from ..session import Images, SavedRun, open_run
from ..settings import ConfigError
from ..state import RunClustering

FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class Source:
    """What a command reads: the run in ``run_dir``, and ``data`` (for the commands on the training images: where
    they are now, when moved; for ``assign`` and ``embed``: the images to place), ``data_root`` (the folder a
    relative ``data`` is under), on ``device``. Any command takes a run directory's path in its place."""
    run_dir: str | Path
    data: Optional[str] = None
    data_root: Optional[str] = None
    device: str = "auto"

    @classmethod
    def of(cls, run: "Source | str | Path") -> "Source":
        return run if isinstance(run, cls) else cls(run)


@dataclass(frozen=True)
class Output:
    """Where a command writes: ``out`` (None: its default file in the run directory), replacing what is there only
    when ``overwrite``; with progress bars when ``progress`` (and a terminal)."""
    out: Optional[str | Path] = None
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Shown:
    """Which groups a command shows: the training's own clustering (``clusters`` None), or ``clusters`` groups (a
    number, or "auto") drawn by ``grouping`` ("kmeans" or "tree", :mod:`~deepcluster.export.groups`)."""
    clusters: object = None
    grouping: str = "kmeans"


def image_names(dataset) -> list:
    """Each item's name: its path relative to the folder for an image folder, its index for the built-in data."""
    files = getattr(dataset, "files", None)
    if files is None:
        return list(range(len(dataset)))
    root = Path(dataset.root)
    return [str(Path(f).relative_to(root)) for f in files]


def run_clustering(run: SavedRun) -> RunClustering:
    """The clustering saved with ``run``, checked against its training images; one ConfigError line if none."""
    c = run.state.clustering
    if c is None:
        what = "a supervised run has no clusters" if run.cfg.supervised else (
            "it has no saved clustering: it has not finished, or it was trained before runs kept one; finish it "
            f"with 'deepcluster train --config {run.run_dir / 'config.yaml'} --out {run.run_dir} --resume'")
        raise ConfigError(f"{run.run_dir}: {what}")
    if run.train_set is not None and len(c.labels[0]) != len(run.train_set):
        raise ConfigError(f"{run.run_dir} clustered {len(c.labels[0])} images but its data {run.train_set.name} "
                          f"now holds {len(run.train_set)}: give the images it was trained on (--data)")
    return c


def requested_groups(run: SavedRun, shown: Shown = Shown()):
    """The groups a command shows: the run's own clustering (every head) when ``shown.clusters`` is None, else
    those of :meth:`~deepcluster.export.groups.RunGroups.groups` (a number, or "auto"), as a
    :class:`~deepcluster.export.groups.Groups`."""
    from .groups import Groups, RunGroups

    c = run_clustering(run)
    if shown.clusters is None:
        k = len(c.centroids[0])
        return Groups(k, "training", f"the training's own clustering (k = {k})", c)
    return RunGroups(run.run_dir, c, run.cfg.k, run.cfg.seed).groups(shown.clusters, shown.grouping)


def ranks(labels: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rank of each image in its cluster by distance, 1 = nearest the centroid; size of its cluster)``."""
    order = np.lexsort((distances, labels))  # by cluster, then by distance
    rank = np.empty(len(labels), np.int64)
    sizes = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank[order] = np.arange(len(labels)) - starts[labels[order]] + 1
    return rank, sizes[labels]


def cluster_rows(names: Sequence, clustering: RunClustering, targets: Optional[np.ndarray] = None,
                 classes: Sequence[str] = (), labels: Optional[list] = None,
                 distances: Optional[list] = None) -> list[dict]:
    """The table's rows, one per image in dataset order: ``image``, then per clustering head ``cluster``,
    ``distance``, ``rank``, ``cluster_size`` (suffixed ``_k<K>`` for the heads after the first), then ``label``
    when ``targets`` are given. ``labels`` / ``distances`` default to the clustering's own (its training images)."""
    labels = clustering.labels if labels is None else labels
    distances = clustering.distances if distances is None else distances
    columns: dict[str, list] = {"image": list(names)}
    for i, (lab, dist, cen) in enumerate(zip(labels, distances, clustering.centroids)):
        suffix = "" if i == 0 else f"_k{len(cen)}"
        rank, size = ranks(lab, dist)
        columns |= {f"cluster{suffix}": lab.tolist(), f"distance{suffix}": np.round(dist, 6).tolist(),
                    f"rank{suffix}": rank.tolist(), f"cluster_size{suffix}": size.tolist()}
    if targets is not None:
        columns["label"] = [classes[t] if t < len(classes) else int(t) for t in targets]
    keys = list(columns)
    return [dict(zip(keys, values)) for values in zip(*columns.values())]


def write_rows(rows: list[dict], out: str | Path, fmt: Optional[str] = None,
               fields: Sequence[str] = ("image",)) -> Path:
    """Write ``rows`` to ``out`` atomically, as CSV or JSON lines (``fmt``, default: from the suffix); ``fields``
    name the columns of a table without rows."""
    out = Path(out)
    fmt = fmt or ("jsonl" if out.suffix in (".jsonl", ".json") else "csv")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format '{fmt}': choose one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            if fmt == "jsonl":
                f.writelines(json.dumps(r) + "\n" for r in rows)
            else:
                w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(fields))
                w.writeheader()
                w.writerows(rows)

    atomic_write(out, write)
    return out


def refuse_existing(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists: choose another output or pass --overwrite to replace it")
    return out


def table_name(clusters=None, grouping: str = "kmeans", fmt: Optional[str] = None) -> str:
    """The default file of a table of groups: ``clusters.csv`` for the training's, else ``clusters-k30.csv``,
    ``clusters-tree-k30.csv``, ``clusters-auto.csv``..."""
    tag = "" if clusters is None else "-" + ("tree-" if grouping == "tree" else "") + (
        "auto" if clusters == "auto" else f"k{clusters}")
    return f"clusters{tag}.{fmt or 'csv'}"


def export_clusters(source: Source | str | Path, output: Output = Output(), fmt: Optional[str] = None,
                    folders: Optional[str | Path] = None, copy: bool = False, shown: Shown = Shown(),
                    levels: Sequence[int] = ()) -> dict:
    """Write the table of a run's training images (default ``RUN_DIR/clusters.csv``, or :func:`table_name`'s for
    other groups) and, with ``folders``, one folder per cluster
    (:func:`~deepcluster.export.folders.write_cluster_folders`), on the CPU. ``shown``: the groups, the
    training's clusters or others drawn from them; ``levels``: each image's group in the tree cut at each of
    these numbers too (columns ``level_K``). Checks everything before writing anything. Returns a summary:
    ``shown`` says which groups the table holds and how they were drawn, ``choice`` is the curve of ``auto``."""
    from ..clustering.hierarchy import leaf_count
    from .folders import check_folders_out, write_cluster_folders
    from .groups import RunGroups

    source = Source.of(source)
    run = open_run(source.run_dir, "cpu", Images(source.data, data_root=source.data_root, whole=False, cache=False))
    c = run_clustering(run)
    overwrite = output.overwrite
    out = refuse_existing(output.out or run.run_dir / table_name(shown.clusters, shown.grouping, fmt), overwrite)
    ds = run.train_set
    if folders is not None:
        check_folders_out(folders, overwrite, ds)
    levels = sorted(set(levels))
    if levels:  # checked before anything is computed (and kept in RUN_DIR/groups)
        most = leaf_count(len(c.labels[0]), run.cfg.k)
        if not 2 <= levels[0] <= levels[-1] <= most:
            raise ConfigError(f"--levels {','.join(map(str, levels))}: the tree of {run.run_dir} cuts into 2 to "
                              f"{most} groups")
    groups = requested_groups(run, shown)
    rows = cluster_rows(image_names(ds), groups.clustering, ds.targets, ds.classes)
    if levels:
        tree = RunGroups(run.run_dir, c, run.cfg.k, run.cfg.seed).tree()
        for k in levels:
            for r, g in zip(rows, tree.labels(k).tolist()):
                r[f"level_{k}"] = g
    c = groups.clustering
    write_rows(rows, out, fmt)
    summary = {"images": len(rows), "clusters": int(len(np.unique(c.labels[0]))), "table": str(out),
               "shown": groups.description, "choice": groups.choice}
    if folders is not None:
        rank, _ = ranks(c.labels[0], c.distances[0])
        summary["folders"] = write_cluster_folders(folders, ds, c.labels[0], rank, copy, overwrite)
    return summary
