"""The run report: one self-contained HTML page (pictures inlined as PNG data, no script, nothing fetched) that
reads top to bottom: status, config, curves, per-epoch table, cluster sizes, cluster image grids, clusters
against labels, a 2-D map of the features, first-layer filters, evaluation tables.

Training rewrites it after an epoch when a minute has passed since it was last written (the page of a run in
progress reloads itself every minute) and once more at the end;
``deepcluster report RUN_DIR`` rebuilds it from the run directory at any time.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..config import Config, ConfigError
from ..diagnose import learning_problems
from ..evaluate.clustering import kmeans_protocol
from ..evaluate.metrics import epoch_nmi_matrix
from ..rundir import FEATURES, RunDir, atomic_write, atomic_write_text
from ..session import Images, open_run
from .browser import write_cluster_browser
from .curves import plot_curves
from .filters import first_layer_kernels, stretch, tile_grid
from .grids import cluster_rows, image_rows, pick_clusters
from .plots import cluster_sizes_figure, confusion_figure, embedding_figure, epoch_nmi_figure, png_bytes, tsne_map

SECTIONS = {"status": "Status", "config": "Configuration", "curves": "Curves over epochs", "epochs": "Epochs",
            "stability": "Clusters across epochs",
            "sizes": "Cluster sizes", "clusters": "Clusters (images drawn at random)",
            "browser": "Every cluster", "groups": "How many groups, and the tree",
            "confusion": "Clusters against labels", "map": "Map of the features",
            "filters": "First-layer filters", "evaluation": "Evaluation"}  # section id -> heading, in page order

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1320px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; } nav a { margin-right: 0.8em; }
.warn { background: #fff4e0; border-left: 4px solid #e8a33d; padding: 0.3em 0.8em; margin: 0.6em 0; }
.cols { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("-" if v is None else str(v))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            out.append((prefix + k, json.dumps(v)[:200]))
        else:
            out.append((prefix + k, v))
    return out


def feature_sample(model, dataset, cfg: Config, device, n: int, features: Optional[np.ndarray] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, L2-normalised fc features)`` of a fixed random sample of ``n`` images (centre view), taken
    from ``features`` (the fc features of every image) when given."""
    from ..features import Reading, centre_view_features
    from ..preprocess import l2_normalize

    idx = np.sort(np.random.default_rng(cfg.seed).choice(len(dataset), min(n, len(dataset)), replace=False))
    if features is not None:
        return idx, l2_normalize(features[idx])
    return idx, l2_normalize(centre_view_features(model, dataset, device, Reading(cfg.batch_size, desc=None,
                                                                                  alone=True), idx))  # rank 0 alone


def duplicate_sample(pairs_csv: Path, dataset, n: int = 12) -> str:
    """The ``n`` most similar pairs that ``deepcluster duplicates`` wrote, side by side; "" when it has not run."""
    import csv

    from ..export.table import image_names

    if not pairs_csv.is_file():
        return ('<p class="note">Near duplicates: <code>deepcluster duplicates RUN_DIR</code> finds them, and this '
                'page then shows a sample.</p>')
    with open(pairs_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    index = {str(name): i for i, name in enumerate(image_names(dataset))}
    shown = [r for r in rows if r["image_a"] in index and r["image_b"] in index][:n]
    if not shown:
        return f'<p class="note">Near duplicates: none at the threshold used ({len(rows)} pairs).</p>'
    pics = image_rows([[dataset[index[r["image_a"]]][0], dataset[index[r["image_b"]]][0]] for r in shown],
                      [f"{r['similarity'][:6]}\n{r['image_a'][-24:]}" for r in shown], cell=64, label_w=210)
    return (f"<h3>Near duplicates: the {len(shown)} most similar of {len(rows)} pairs</h3>"
            + _img(png_bytes(pics), "near-duplicate pairs"))


def evaluation_tables(run: RunDir) -> str:
    """The closing k-means evaluation (``eval.json``) and every ``deepcluster eval`` result (``eval/*.json``)."""
    parts = []
    if (run / "eval.json").is_file():
        ev = json.loads((run / "eval.json").read_text())
        if ev.get("results"):
            parts.append(f"<h3>k-means with k = {ev['k']} ({kmeans_protocol(ev)}) on {html.escape(ev['split'])}"
                         f" ({ev['images']} images)</h3>")
            parts.append(_table(["features", "pre-processing", "NMI", "ARI", "accuracy"],
                                [[r["features"], r["preprocessing"], r["nmi"], r["ari"], r["acc"]]
                                 for r in ev["results"]]))
        if ev.get("knn"):
            kn = ev["knn"]
            parts.append(f"<h3>kNN top-1 (k = {kn['k']}, cosine; votes from {html.escape(kn['database'])})</h3>")
            parts.append(_table(["features", "layer", "top-1"],
                                [[r["features"], r.get("layer", "fc"), r["top1"]] for r in kn["results"]]))
    results: dict[str, dict[str, dict]] = {}  # protocol -> {"trained" | "random init": flat results}
    for p in sorted((run / "eval").glob("*.json")) if (run / "eval").is_dir() else []:
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        which = "random init" if res.get("random_init") else "trained"
        results.setdefault(res.get("protocol", p.stem), {})[which] = dict(_flatten(res))
    for protocol, by in results.items():
        cols = [c for c in ("trained", "random init") if c in by]
        keys = [k for k in dict.fromkeys(k for c in cols for k in by[c]) if k not in ("protocol", "random_init")]
        parts.append(f"<h3>deepcluster eval {html.escape(protocol)}</h3>")
        parts.append(_table(["result"] + cols, [[k] + [by[c].get(k) for c in cols] for k in keys]))
    return "".join(parts) or '<p class="note">No evaluation yet: it runs at the end of training, or with ' \
                             '<code>deepcluster eval all --run RUN_DIR</code>.</p>'


@dataclass(frozen=True)
class Drawn:
    """What a report is drawn from besides the run's files: the network (``model``, on ``device``) and its images
    (``dataset``), the clusters (``assignment``, or the run's final ``clustering``,
    :class:`~deepcluster.state.RunClustering`, whose clusters are then the ones shown), other groups than the
    training's to show (``shown``, :class:`~deepcluster.export.groups.Groups`, from ``report --clusters``), the
    network's fc features of every image when the caller has them (``features``: the map then reads no image), at
    most ``map_images`` images on the map; ``final`` False: a run in progress."""
    model: object = None
    dataset: object = None
    assignment: Optional[np.ndarray] = None
    final: bool = True
    device: object = "cpu"
    map_images: int = 1000
    clustering: object = None
    features: Optional[np.ndarray] = None
    shown: object = None


@dataclass
class _Page:
    """A report being drawn: its inputs, what follows from them, and its sections' HTML (``sec``)."""
    run: RunDir
    cfg: Config
    history: list
    given: Drawn
    clustering: object  # the clusters shown (the training's, or ``given.shown``'s)
    assignment: Optional[np.ndarray]
    targets: Optional[np.ndarray]
    classes: tuple
    evaluation: Optional[dict]
    sec: dict


def write_report(run_dir: str | Path, cfg: Config, history: list[dict], given: Drawn = Drawn()) -> Path:
    """Write ``RUN_DIR/report/index.html`` and its curves as ``RUN_DIR/curves.png`` (atomically) from what is
    ``given``; sections whose inputs are missing (no epoch yet, no labels, no dataset) say so instead. A run in
    progress (``given.final`` False): the page reloads itself every 60 s, and its map is drawn from at most a tenth
    of the images (so that a report costs little next to an epoch on small data). With the run's final
    clustering, the cluster browser (:mod:`.browser`) is written beside the page. Returns the page's path."""
    run, dataset, final = RunDir(run_dir), given.dataset, given.final
    clustering = given.shown.clustering if given.shown is not None else given.clustering
    assignment = clustering.labels[0] if clustering is not None else given.assignment
    if assignment is not None and dataset is not None and len(assignment) != len(dataset):
        raise ConfigError(f"the run's assignment has {len(assignment)} images but the data has {len(dataset)}: "
                          f"give the data the run was trained on (--data)")
    evaluation = json.loads((run / "eval.json").read_text()) if final and (run / "eval.json").is_file() else None
    page = _Page(run, cfg, history, given, clustering, assignment,
                 getattr(dataset, "targets", None) if dataset is not None else None,
                 getattr(dataset, "classes", ()) or (), evaluation, {})
    curves = png_bytes(plot_curves(history), dpi=110)
    for draw in (_status, _settings_and_epochs, _clusters, _map, _filters):
        draw(page)
    page.sec["curves"] = _img(curves, "curves over epochs")
    page.sec["groups"] = groups_section(run, cfg, given.clustering, dataset) if final else \
        '<p class="note">Drawn once training has ended.</p>'
    page.sec["evaluation"] = evaluation_tables(run)
    nav = " ".join(f'<a href="#{s}">{title}</a>' for s, title in SECTIONS.items())
    body = "".join(f'<section id="{s}"><h2>{title}</h2>{page.sec[s]}</section>' for s, title in SECTIONS.items())
    refresh = "" if final else '<meta http-equiv="refresh" content="60">'
    html_page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{refresh}'
                 f'<title>DeepCluster run {html.escape(run.path.name)}</title><style>{STYLE}</style></head><body>'
                 f'<h1>DeepCluster run {html.escape(run.path.name)}</h1><nav>{nav}</nav>{body}</body></html>\n')
    out = run / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    if history:  # the run's curves.png is the same picture
        atomic_write(run / "curves.png", lambda tmp: Path(tmp).write_bytes(curves))
    atomic_write_text(out, html_page)
    return out


def _status(page: _Page) -> None:
    """Where the run stands, its last epoch, and what went wrong."""
    cfg, history, dataset = page.cfg, page.history, page.given.dataset
    done = history[-1]["epoch"] if history else 0
    state = ("finished" if page.given.final else f"in progress: epoch {done} of {cfg.epochs} done; this page "
             f"reloads every minute")
    what = ("supervised baseline (true labels)" if cfg.supervised else
            f"DeepCluster {cfg.method}, " + ("PIC" if cfg.clustering == "pic" else f"k-means with k = {cfg.k}"))
    data = html.escape(str(getattr(dataset, "name", cfg.data)))
    status = [f"<p><b>{html.escape(state)}</b>. {html.escape(what)}. Data: {data}"
              f"{f', {len(dataset)} images' if dataset is not None else ''}; written "
              f"{datetime.datetime.now().isoformat(timespec='seconds')}.</p>"]
    if history:
        last = history[-1]
        status.append(_table(["last epoch", "loss", "NMI vs labels", "NMI vs previous", "clusters", "imbalance"],
                             [[last["epoch"], last.get("loss"), last.get("nmi_labels"), last.get("nmi_prev"),
                               last.get("clusters"), last.get("imbalance")]]))
    else:
        status.append('<p class="note">No epoch has finished yet: the pictures appear after the first one.</p>')
    problems = learning_problems(history, page.evaluation)
    if problems:
        status.append('<div class="warn"><b>This run did not learn well:</b><ul>'
                      + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul></div>")
    page.sec["status"] = "".join(status)


def _settings_and_epochs(page: _Page) -> None:
    """The settings, each epoch's row, and how stable the pseudo-labels were between epochs."""
    history, sec = page.history, page.sec
    items = list(page.cfg.to_dict().items())
    per_col = -(-len(items) // 3)  # three setting/value column pairs keep the table short
    sec["config"] = _table(["setting", "value"] * 3,
                           [sum((list(items[c * per_col + r]) if c * per_col + r < len(items) else ["", ""]
                                 for c in range(3)), []) for r in range(per_col)])
    keys = [k for k in dict.fromkeys(k for r in history for k in r) if k != "epoch"
            and any(r.get(k) is not None for r in history)]
    sec["epochs"] = _table(["epoch"] + keys, [[r["epoch"]] + [r.get(k) for k in keys] for r in history]) \
        if history else '<p class="note">No epoch yet.</p>'
    logged = page.run.epoch_clusters(history[-1]["epoch"] if history else 0)
    if len(logged) >= 2:
        epochs, m = epoch_nmi_matrix(logged)
        sec["stability"] = (f'<p class="note">Each epoch\'s pseudo-labels are kept in <code>clusters/</code> '
                            f'({len(logged)} epochs); {len(epochs)} of them are compared here, on at most 100,000 '
                            f'images.</p>' + _img(png_bytes(epoch_nmi_figure(epochs, m)), "NMI between epochs"))
    else:
        sec["stability"] = ('<p class="note">Needs the pseudo-labels of two epochs (<code>clusters/</code>; '
                            'supervised runs and runs trained before the cluster log have none).</p>')


def _clusters(page: _Page) -> None:
    """The clusters: their sizes, sample images, the browser of all of them, and how they cross the labels."""
    cfg, sec, assignment, dataset, targets = page.cfg, page.sec, page.assignment, page.given.dataset, page.targets
    if assignment is None:
        no_assign = ('<p class="note">A supervised run learns no clusters: its features are judged by the closing '
                     'evaluation.</p>' if cfg.supervised else
                     '<p class="note">No clustering yet: it appears after the first epoch.</p>')
        for s in ("sizes", "clusters", "browser", "confusion"):
            sec[s] = no_assign
        return
    sec["sizes"] = _img(png_bytes(cluster_sizes_figure(assignment)), "cluster sizes")
    if dataset is None:
        sec["clusters"] = '<p class="note">The data could not be loaded, so no images are shown.</p>'
    else:
        grids = []
        for name, ids in pick_clusters(assignment, targets, seed=cfg.seed):
            grids.append(f"<h3>{html.escape(name)}</h3>")
            grids.append(_img(png_bytes(image_rows(*cluster_rows(dataset, assignment, ids, 12, cfg.seed))),
                              f"{name} clusters"))
        sec["clusters"] = "".join(grids)
    sec["browser"] = _browser(page) if page.clustering is not None and dataset is not None else \
        '<p class="note">The cluster browser is written once training has ended.</p>'
    sec["confusion"] = _img(png_bytes(confusion_figure(assignment, targets, page.classes)), "clusters by label") \
        if targets is not None else '<p class="note">The data has no labels (one subfolder per class gives ' \
                                    'them), so clusters cannot be compared with classes.</p>'


def _browser(page: _Page) -> str:
    """Write the cluster browser beside the page; the paragraph that links it."""
    run, dataset, shown = page.run, page.given.dataset, page.given.shown
    pages = write_cluster_browser(run / "report", dataset, page.assignment, page.clustering.distances[0],
                                  f"DeepCluster run {run.path.name}", STYLE, targets=page.targets)
    first = pages[0].relative_to(run / "report").as_posix()
    which = "" if shown is None else f" ({html.escape(shown.description)})"
    return (f'<p>All {len(np.unique(page.assignment))} clusters of the trained network{which}, largest '
            f'first, each with its most central images and their file names: '
            f'<a href="{first}">the cluster browser</a> ({len(pages)} page'
            f'{"s" if len(pages) > 1 else ""}).</p>') + duplicate_sample(run / "duplicates.csv", dataset)


def _map(page: _Page) -> None:
    """A t-SNE map of a sample of the images' features, coloured by cluster, marked by label."""
    given, dataset, assignment, targets = page.given, page.given.dataset, page.assignment, page.targets
    map_images = given.map_images
    if not given.final and dataset is not None:
        map_images = min(map_images, max(5, len(dataset) // 10))
    if given.model is None or dataset is None or min(map_images, len(dataset)) < 5:
        page.sec["map"] = '<p class="note">Needs the network and at least 5 images (--map-images).</p>'
        return
    idx, feats = feature_sample(given.model, dataset, page.cfg, torch.device(given.device), map_images,
                                given.features)
    xy = tsne_map(feats)
    page.sec["map"] = (f'<p class="note">t-SNE of the L2-normalised fc features of {len(idx)} images drawn at '
                       f'random, by the current network.</p>'
                       + _img(png_bytes(embedding_figure(xy, assignment[idx] if assignment is not None else
                                                         np.zeros(len(idx), int),
                                                         None if targets is None else targets[idx],
                                                         page.classes)), "t-SNE map of the features"))


def _filters(page: _Page) -> None:
    """The first layer's kernels."""
    model = page.given.model
    if model is None:
        page.sec["filters"] = '<p class="note">No network yet.</p>'
        return
    k = first_layer_kernels(model)
    sobel = " (grey + Sobel composed with conv1, as seen from the pixels)" if model.sobel is not None else ""
    page.sec["filters"] = (f'<p class="note">{len(k)} conv1 kernels{sobel}, each contrast-stretched. '
                           f'<code>deepcluster visualize filters</code> draws deeper layers.</p>'
                           + _img(png_bytes(tile_grid(stretch(k), cols=16, cell=40)), "first-layer filters"))


def groups_section(run: RunDir, cfg: Config, clustering, dataset) -> str:
    """The curve of how many groups the run's images form and the top of its tree, from its final features."""
    from ..export.groups import AUTO_MIN, RunGroups
    from .tree import curve_figure, tree_figure

    if clustering is None or dataset is None or not (run / FEATURES).is_file():
        return '<p class="note">Needs the run\'s final clustering, its final features and its images.</p>'
    groups = RunGroups(run.path, clustering, cfg.k, cfg.seed)
    if groups.n < AUTO_MIN:
        return f'<p class="note">Needs at least {AUTO_MIN} images.</p>'
    choice, tree = groups.choice(), groups.tree()
    return (f'<p>Without labels, the {choice.criterion} of the tree\'s cuts scores each number of groups K: '
            f'{html.escape(choice.describe())}. <code>deepcluster export {html.escape(str(run.path))} --clusters '
            f'auto</code> (or any K, <code>--levels 5,20,100</code> for nested levels) writes them by file.</p>'
            + _img(png_bytes(curve_figure(choice)), "how many groups: the curve")
            + _img(png_bytes(tree_figure(tree, groups.features, dataset), dpi=90), "the top of the tree"))


def build_report(run_dir: str | Path, data: Optional[str] = None, data_root: Optional[str] = None,
                 device: str = "auto", map_images: int = 1000, clusters=None, grouping: str = "kmeans") -> Path:
    """Rebuild the report of a run directory from its files: config, metrics, checkpoint (network and the last
    assignment) and the training data (the run's own, unless ``data``/``data_root`` say where it is now);
    ``clusters`` / ``grouping``: other groups than the training's to show (``report --clusters``)."""
    if not (Path(run_dir) / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml): give a folder written by "
                          f"'deepcluster train'")
    run = open_run(run_dir, device, Images(data, data_root=data_root, whole=False, cache=False),
                   need_checkpoint=False)  # a few images are shown: not decoded into memory
    history = RunDir(run.run_dir).read_metrics()
    if run.state is not None:
        history = [r for r in history if r["epoch"] <= run.state.epoch]
    final = run.state is not None and run.state.epoch >= run.cfg.epochs
    clustering = run.state.clustering if run.state is not None else None
    # a finished run shows its final clustering, as training's last page did; one in progress its last epoch's
    assignment = clustering.labels[0] if clustering is not None else \
        run.state.assignment if run.state is not None else None
    shown = None
    if clusters is not None:
        from ..export.table import Shown, requested_groups

        shown = requested_groups(run, Shown(clusters, grouping))
    return write_report(run.run_dir, run.cfg, history, Drawn(run.model, run.train_set, assignment, final, run.device,
                                                             map_images, clustering, shown=shown))
