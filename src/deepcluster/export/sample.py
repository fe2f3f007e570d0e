"""Representatives of each cluster: the images nearest its centroid and, on request, a spread sample (farthest-point
sampling from the most central image, so that the picks cover the cluster rather than its core): what an annotator
or a data curator takes from a clustering."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..session import Images, open_run
from ..settings import ConfigError
from ..space import embed
from .table import Output, Shown, Source, image_names, ranks, refuse_existing, requested_groups, write_rows


def farthest_points(x: np.ndarray, start: int, n: int) -> list[int]:
    """``n`` rows of ``x`` (or all, if fewer): ``start``, then each time the row farthest from those picked."""
    picked = [start]
    d = np.linalg.norm(x - x[start], axis=1)
    while len(picked) < min(n, len(x)):
        nxt = int(d.argmax())
        picked.append(nxt)
        d = np.minimum(d, np.linalg.norm(x - x[nxt], axis=1))
    return picked


def sample_representatives(source: Source | str | Path, per_cluster: int = 5, spread: int = 0,
                           output: Output = Output(), folders: Optional[str | Path] = None, copy: bool = False,
                           shown: Shown = Shown()) -> dict:
    """Write ``RUN_DIR/representatives.csv`` (image, cluster, kind "central" | "spread", pick, distance,
    cluster_size): the ``per_cluster`` images nearest each centroid, and ``spread`` more per cluster by farthest
    points in the clustering space; with ``folders``, one folder per cluster of them."""
    from .folders import check_folders_out, write_cluster_folders

    if per_cluster < 1 or spread < 0:
        raise ConfigError(f"--per-cluster {per_cluster} / --spread {spread}: at least one central image per "
                          f"cluster, and no negative spread")
    source, overwrite, progress = Source.of(source), output.overwrite, output.progress
    run = open_run(source.run_dir, source.device, Images(source.data, data_root=source.data_root, whole=False,
                                                         cache=False))
    out = refuse_existing(output.out or run.run_dir / "representatives.csv", overwrite)
    ds = run.train_set
    if folders is not None:
        check_folders_out(folders, overwrite, ds)
    groups = requested_groups(run, shown)
    c = groups.clustering
    labels, dist = c.labels[0], c.distances[0]
    rank, size = ranks(labels, dist)
    x = None
    if spread:
        x = embed(run.model, ds, c, run.device, run.reading("spread sample" if progress else None))
    names, rows, picks = image_names(ds), [], {}
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        members = members[np.argsort(rank[members])]
        chosen = [(int(i), "central") for i in members[:per_cluster]]
        if spread:
            far = [members[j] for j in farthest_points(x[members], 0, per_cluster + spread)]
            taken = {i for i, _ in chosen}
            chosen += [(int(i), "spread") for i in far if i not in taken][:spread]
        for pick, (i, kind) in enumerate(chosen, 1):
            rows.append({"image": names[i], "cluster": int(k), "kind": kind, "pick": pick,
                         "distance": round(float(dist[i]), 6), "cluster_size": int(size[i])})
            picks[i] = pick
    write_rows(rows, out)
    summary = {"images": len(rows), "clusters": int(len(np.unique(labels))), "table": str(out),
               "shown": groups.description, "choice": groups.choice}
    if folders is not None:
        order = np.zeros(len(labels), np.int64)
        order[list(picks)] = list(picks.values())
        summary["folders"] = write_cluster_folders(folders, ds, labels, order, copy, overwrite,
                                                   items=np.array(sorted(picks)))
    return summary
