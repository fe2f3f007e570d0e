"""The DeepCluster loop: features -> PCA-whitening + L2 -> k-means -> pseudo-labels -> fresh head ->
one epoch on a sample drawn uniformly over clusters. Then again. The epochs themselves are the methods of
:mod:`deepcluster.training`; this module runs them and owns the run: its directory, its state, what it leaves.

The same code runs alone or under ``torchrun`` (see :mod:`deepcluster.distributed`): every process extracts its
shard, rank 0 clusters and broadcasts, every process trains on its slice of the common sample list, rank 0 writes.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist
from . import recipe
from .checkpoint import BackgroundWriter
from .config import Config
from .console import epoch_line, summary_table
from .data import ImageFolder
from .device import (
    Precisions,
    check_extraction,
    precision_name,
    resolve_device,
    settled_precisions,
)
from .evaluate import ari, nmi
from .evaluate.closing import KNN_DATABASE_GB, Closing, closing_grid, closing_splits, evaluate_features
from .features import FeatureCache, Reading
from .network import restore_model, start_from
from .rundir import FEATURES, RunDir
from .session import datasets, fresh_network, training_images, with_init
from .space import Space, embed
from .state import CHECKPOINT, RunState
from .training import DeepClusterV1, DeepClusterV2, Epoch, Method, Supervised, epoch_lr, epoch_seed


def train(cfg: Config, out: str | Path, resume: bool = False, overwrite: bool = False,
          quiet: bool = False) -> dict:
    """Train DeepCluster as configured, writing the run to ``out``. Returns the summary
    ``{"metrics": [per-epoch rows], "eval": {...}, "run_dir": str}``.

    Under ``torchrun`` every process calls this alike; rank 0 alone prints and writes, and the summary it returns
    is the run's (the other processes return theirs without evaluation or history)."""
    started = time.perf_counter()
    cfg = replace(cfg).validate()
    joined, ended = dist.setup(cfg.device), False
    # Rank 0 writes checkpoints in the background (see _train); a run that stops on an error still lands the
    # write in flight before the error reaches the caller.
    writer = BackgroundWriter()
    try:
        summary = _train(cfg, out, resume, overwrite, quiet or not dist.is_main(), started, writer)
        ended = True
        return summary
    finally:
        writer.join()
        if joined:
            dist.teardown(wait=ended)


# The page of a run in progress reloads itself every minute: rewriting it more often is work nobody sees.
REPORT_EVERY = 60.0  # seconds


class Clock:
    """Seconds of this call spent in each part of the run (data, epochs, checkpoints, the closing evaluation,
    reports...), parts that do not overlap: ``timing.json`` keeps them and the summary prints those besides the
    epochs."""

    def __init__(self, started: float):
        self.started, self.parts = started, {}  # started: when the command began

    @contextmanager
    def part(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t

    def record(self) -> dict:
        total = time.perf_counter() - self.started
        return {"seconds": total, "parts": {**self.parts, "other": total - sum(self.parts.values())}}


@dataclass
class Run:
    """The run as opening it settles it, for the phases after: the settings as resolved, the images, the device,
    the run directory and the saved state (this object owns it: each epoch's record replaces it)."""
    cfg: Config
    train_set: object
    val_set: object
    device: torch.device
    precisions: Precisions  # the training passes', the clustering passes' from epoch 2 on, the kept features'
    dir: RunDir
    state: Optional[RunState]
    resuming: bool
    quiet: bool
    clock: Clock
    writer: BackgroundWriter
    init: Optional[RunState] = None  # --init's weights, which a new run starts from

    @property
    def main(self) -> bool:
        return dist.is_main()

    def say(self, *a) -> None:
        if not self.quiet:
            print(*a)

    def reading(self, desc: str) -> Reading:
        """How the run reads the images whose features it keeps: its batch size and workers, in the kept
        precision."""
        return Reading(self.cfg.batch_size, self.cfg.workers, self.precisions.kept, desc)

    @cached_property
    def closing_sets(self) -> tuple:
        return closing_splits(self.train_set, self.val_set, self.cfg.eval, self.cfg.eval_images, self.cfg.seed)

    @property
    def eval_set(self):
        """The labelled images the closing evaluation scores (:func:`~deepcluster.evaluate.closing.closing_splits`):
        the validation images when labelled, else the training images when labelled, drawn down to
        ``--eval-images`` with ``--eval sample``; None with ``--eval none`` or without labels."""
        return self.closing_sets[0]

    @property
    def db(self):
        """The kNN votes' labelled database: the training images when another split is scored, else None
        (leave-one-out)."""
        return self.closing_sets[1]


@dataclass
class Built:
    """The model, the method and the optimiser, the features the run reads more than once (``cache``), and where
    the loop starts: its first epoch, the assignment before it and the metrics rows so far (rank 0)."""
    model: object
    method: Method
    optimizer: object
    cache: FeatureCache
    start: int
    previous: Optional[np.ndarray]
    history: list


def _train(cfg: Config, out: str | Path, resume: bool, overwrite: bool, quiet: bool, started: float,
           writer: BackgroundWriter) -> dict:
    run = _open(cfg, out, resume, overwrite, quiet, Clock(started), writer)
    built = _build(run)
    observers = _observers(run, built) if run.main else []
    _fit(run, built, observers)
    return _finish(run, built, observers)


def _open(cfg: Config, out, resume: bool, overwrite: bool, quiet: bool, clock: Clock,
          writer: BackgroundWriter) -> Run:
    """The data (every check on the inputs comes before anything is written) and the settings it asks for (a
    resumed run keeps the settings it was trained with; what is still unset, the recipe chooses), the device and
    its precisions, then the run directory and its saved state: every rank gets it, less the v2 bank, which only
    rank 0 uses."""
    folder = RunDir(out)
    with clock.part("data"):
        cfg, init = with_init(cfg)  # --init: the network its weights fit
        saved = dist.on_main(folder.saved_config) if resume and not overwrite else None
        # a resumed run keeps the images it was trained on; a new one draws --subset at random
        cfg = replace(cfg, subset_draw=cfg.subset_draw or (saved.subset_draw if saved is not None else "random"))
        train_set = training_images(cfg)
        given = cfg = recipe.take_saved(cfg, saved) if saved is not None else cfg  # the recipe chooses the rest
        data = recipe.profile(train_set) if cfg.recipe == "auto" and recipe.left_to_recipe(cfg) else None
        cfg = recipe.resolve(cfg, data).validate().check_data(len(train_set), train_set.targets is not None,
                                                              train_set.name)
        train_set, val_set = datasets(cfg, train=train_set)
    device = resolve_device(cfg.device)
    check_extraction(cfg.section("runtime"), device)
    # config.yaml says what this machine computes in; the three precisions, resolved once, here
    cfg = replace(cfg, **settled_precisions(cfg.section("runtime"), device, len(train_set)))
    precisions = Precisions.of(cfg.section("runtime"), device, len(train_set))
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed input sizes: let cuDNN pick its fastest kernels
    if cfg.tensorboard:
        from .visualize.tensorboard import check_tensorboard

        check_tensorboard()

    def open_run():  # on rank 0
        resuming = folder.open(cfg, resume, overwrite)
        state = RunState.load(folder / CHECKPOINT) if resuming and (folder / CHECKPOINT).exists() else None
        folder.write_config(cfg)
        return resuming, state

    resuming, state = dist.on_main(open_run, share=lambda r: (r[0], r[1] and r[1].without_bank()))
    run = Run(cfg, train_set, val_set, device, precisions, folder, state, resuming, quiet, clock, writer, init)
    run.say(f"deepcluster: {len(train_set)} images from {train_set.name}, arch {cfg.arch}"
            f"{' + sobel' if cfg.sobel else ''}, {'PIC' if cfg.clustering == 'pic' else f'k = {cfg.k}'}, "
            f"{cfg.epochs} epochs on {device}{f' x {dist.world_size()} processes' if dist.enabled() else ''}, "
            f"{precision_name(precisions.extraction)} extraction, run dir {folder.path}")
    run.say(cfg.to_yaml().rstrip())
    run.say(recipe.describe(given, cfg, data))
    if isinstance(train_set, ImageFolder) and cfg.cache_gb > 0:  # too large to decode once into memory
        run.say(f"note: the images do not fit --cache-gb {cfg.cache_gb:g} (or half the available memory), so every "
                f"pass decodes the files again; 'deepcluster prepare {train_set.root} DEST' once, then --data "
                f"DEST, reads them 3-5x faster (and on a GPU decodes them there)")
    return run


def _build(run: Run) -> Built:
    """The model, the method and its optimiser, from the saved state when the run resumes, and the run's feature
    cache."""
    cfg, state, train_set = run.cfg, run.state, run.train_set
    with run.clock.part("set-up"):
        model = fresh_network(cfg, train_set.channels, run.device)
        # an --epochs 0 run's state holds its network as it was given: going on from it is a start, not a resume
        trained = state if state is not None and state.epoch > 0 else None
        start = state if state is not None and state.epoch == 0 else run.init
        if trained is not None:
            restore_model(model, trained)
        elif start is not None:
            start_from(model, start, cfg.init or str(run.dir.path))
        grid, conv_width = closing_grid(model, train_set.channels, run.device)
        cache = FeatureCache(grid)
        method = _method(run, cache)
        optimizer = method.start(model, train_set, trained)
    built = Built(model, method, optimizer, cache, 1, None, [])
    if state is not None:
        built.start, built.previous = state.epoch + 1, state.assignment
        built.history = run.dir.keep_metrics(state.epoch) if run.main else []
        run.say(f"resuming after epoch {state.epoch}")
    elif run.resuming and run.main:
        built.history = run.dir.keep_metrics(0)
    if state is None and cfg.epochs == 0 and run.main:  # no epoch to train: the network as it is, clustered
        run.state = RunState(0, cfg, model.state_dict(), model.head.out_features)
    # The closing evaluation compares with the random network, which epoch 1 may read anyway (v1 does): keep its
    # features of the training images when they are evaluated and take at most 1 GiB (one process; all fitted by
    # the PCA).
    fits = len(train_set) <= cfg.pca_sample and len(train_set) * (model.feature_dim + conv_width) * 4 <= 2 ** 30
    if built.start == 1 and run.init is None and not dist.enabled() and train_set in (run.eval_set, run.db) and fits:
        cache.want("random-init", train_set)
    return built


def _method(run: Run, cache: FeatureCache) -> Method:
    """The method the run trains with, carrying on from the saved state (v2's bank) when the run resumes."""
    method = method_for(run.cfg, run.device, run.precisions, cache)
    if isinstance(method, DeepClusterV2) and run.state is not None:
        method.bank = run.state.bank
    return method


def method_for(cfg: Config, device: torch.device, precisions: Precisions,
               cache: Optional[FeatureCache] = None) -> Method:
    """The method ``cfg`` trains with, given the settings it reads (what is learned, the clustering, the
    optimisation, the runtime's)."""
    kind = Supervised if cfg.supervised else DeepClusterV2 if cfg.method == "v2" else DeepClusterV1
    return kind(cfg.section("model"), cfg.section("clustering"), cfg.section("optimisation"), cfg.section("runtime"),
                device, precisions, cache)


def closing_options(cfg: Config, device: torch.device, kept: Optional[torch.dtype]) -> Closing:
    """How the closing evaluation of a run of ``cfg`` runs on ``device``, reading in the ``kept`` precision."""
    return Closing(Reading(cfg.batch_size, cfg.workers, kept, None), cfg.pca_dim, cfg.eval_seeds, cfg.seed,
                   lambda channels: fresh_network(cfg, channels, device),
                   KNN_DATABASE_GB if cfg.eval == "sample" else None)


def _fit(run: Run, built: Built, observers: list) -> None:
    """The DeepCluster loop: each epoch's lr, the method's epoch, its record (metrics and checkpoint, written by
    rank 0 in the background while the next epoch runs), then the observers (rank 0)."""
    cfg, clock, model, optimizer = run.cfg, run.clock, built.model, built.optimizer
    for epoch in tqdm(range(built.start, cfg.epochs + 1), desc="deepcluster", unit="epoch",
                      initial=built.start - 1, total=cfg.epochs, disable=True if run.quiet else None):
        lr = epoch_lr(cfg.lr, cfg.lr_schedule, cfg.epochs, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with clock.part("checkpoints"):  # an error of the last write stops every rank here
            dist.on_main(run.writer.check, share=lambda _: None)
        with clock.part("epochs"):
            done = built.method.epoch(model, optimizer, run.train_set, epoch)
        # rank 0 writes the epoch; an error there (a full disk) stops every rank with its line
        with clock.part("checkpoints"):
            run.state = dist.on_main(partial(_record_epoch, run, built, epoch, lr, done), share=lambda _: None)
        if not run.main:
            continue
        built.previous = done.assignment
        built.history.append(done.row)
        for observer in observers:
            with clock.part(observer.part) if observer.part else nullcontext():
                observer.epoch(epoch, done.row, done.assignment)


def _finish(run: Run, built: Built, observers: list) -> dict:
    """What the run leaves: the trained network's clustering (kept in the state), the closing evaluation, the
    results, the pictures and the summary."""
    clustering, final = _final_clustering(run, built)
    trained = built.cache.kept.get(("trained", run.train_set))
    evaluation = _evaluate(run, built)
    main = run.main

    def write_results():
        if clustering is not None:
            run.dir.save_array("assignments.npy", clustering.labels[0])
        if final is not None:
            run.dir.save_features(final)
        if evaluation:
            run.dir.write_json("eval.json", evaluation)

    with run.clock.part("checkpoints"):
        dist.on_main(run.writer.wait, share=lambda _: None)  # every write landed
    dist.on_main(write_results)
    if not main:
        return {"metrics": built.history, "eval": evaluation, "run_dir": str(run.dir.path)}
    with run.clock.part("reports"):
        for observer in observers:
            observer.close(evaluation, clustering, trained)
    timing = run.clock.record()
    run.dir.write_json("timing.json", timing)
    cfg = run.cfg
    extract, kept = run.precisions.extraction, run.precisions.kept
    precisions = f"training {cfg.precision}, clustering passes {precision_name(extract)}" + (
        f" from epoch 2 (epoch 1, final clustering and evaluation {precision_name(kept)})"
        if extract != kept else "")
    run.say(summary_table(built.history, evaluation, run.dir.path, timing, precisions, cfg.eval == "none"))
    return {"metrics": built.history, "eval": evaluation, "run_dir": str(run.dir.path), "timing": timing}


def _final_clustering(run: Run, built: Built):
    """The trained network's clustering of the training images, fitted as training does and kept in the state
    (a finished run resumed keeps the one it has). Returns ``(clustering, final)``: the clustering (rank 0; None
    for a method that learns no clusters) and the features it clustered (None when not computed here). When one
    pass serves the clustering and the evaluation (one process, at most pca_sample images), the trained network's
    closing features of the training images are kept in the run's cache, followed by their clustering input when
    the whitening was fitted here on them."""
    cfg, model, main, cache = run.cfg, built.model, run.main, built.cache
    train_set, device = run.train_set, run.device
    need = dist.broadcast_object(main and run.state.clustering is None)
    clustering, final = run.state.clustering if main else None, None
    with run.clock.part("final clustering"):
        if not dist.enabled() and len(train_set) <= cfg.pca_sample and (
                need or train_set in (run.eval_set, run.db)):
            cache.read("trained", model, train_set, device, run.reading("final features"))
        trained = cache.kept.get(("trained", train_set))
        if need:
            clustering, final = built.method.final_clustering(model, train_set, epoch_seed(cfg.seed, cfg.epochs + 1),
                                                              None if trained is None else trained[0])
        elif clustering is not None and main and not dist.enabled() and not (run.dir / FEATURES).exists():
            # a run finished before runs kept their final features: the saved clustering's space, again
            final = embed(model, train_set, clustering, device,
                          replace(run.reading("final features"), alone=True))
    if need:
        def keep():
            kept = replace(run.state, clustering=clustering) if clustering is not None else run.state
            if clustering is not None:
                run.writer.submit(partial(kept.save, run.dir / CHECKPOINT))
            return kept

        with run.clock.part("checkpoints"):
            run.state = dist.on_main(keep, share=lambda _: None)
        if trained is not None and clustering is not None and clustering.space == "whitened":
            # the PCA-whitening the final clustering fitted on these very features: the evaluation's too
            cache.add("trained", train_set, Space.of(clustering).rows(trained[0]))
    if clustering is not None:
        built.previous = clustering.labels[0]
    return clustering, final


def _evaluate(run: Run, built: Built) -> dict:
    """The closing evaluation on the labelled split, reusing what the run's cache holds of the training images:
    the trained network's features, the random network's from epoch 1."""
    with run.clock.part("evaluation"):
        how = closing_options(run.cfg, run.device, run.precisions.kept)
        evaluation = evaluate_features(built.model, run.eval_set, run.device, how, run.db, built.cache.kept,
                                       run.closing_sets[2]) if run.eval_set is not None else {}
    built.cache.clear()
    return evaluation


class Console:
    """Each epoch's line under the progress bar."""
    part = None

    def epoch(self, epoch: int, row: dict, assignment) -> None:
        tqdm.write(epoch_line(row))

    def close(self, evaluation: dict, clustering, trained) -> None:
        pass


class TensorBoard:
    """The epoch's scalars and clusters, and the closing evaluation, for TensorBoard (``--tensorboard``)."""
    part = "reports"

    def __init__(self, run: Run, first_epoch: int):
        from .visualize.tensorboard import TensorBoardLog

        self.run, self.log = run, TensorBoardLog(run.dir.path, first_epoch=first_epoch)

    def epoch(self, epoch: int, row: dict, assignment) -> None:
        self.log.epoch(row, self.run.train_set, assignment, self.run.cfg.seed)

    def close(self, evaluation: dict, clustering, trained) -> None:
        self.log.evaluation(evaluation, self.run.cfg.epochs)
        self.log.close()


class Pictures:
    """The run's pictures: the HTML report, rewritten every :data:`REPORT_EVERY` seconds while training
    (``--report``), and at the end the report or the curves alone, and the cluster grid."""
    part = "reports"

    def __init__(self, run: Run, built: Built):
        self.run, self.built, self.reported = run, built, run.clock.started

    def epoch(self, epoch: int, row: dict, assignment) -> None:
        cfg = self.run.cfg
        if cfg.report and epoch < cfg.epochs and time.perf_counter() - self.reported >= REPORT_EVERY:
            _report(self.run, self.built, assignment, final=False)
            self.reported = time.perf_counter()

    def close(self, evaluation: dict, clustering, trained) -> None:
        import matplotlib.pyplot as plt

        from .visualize import plot_curves, save_cluster_grid

        run, built = self.run, self.built
        if not run.cfg.report:  # else the report draws them
            plt.close(plot_curves(built.history, run.dir / "curves.png"))
        if clustering is not None:
            save_cluster_grid(run.train_set, clustering.labels[0], run.dir / "clusters.png", seed=run.cfg.seed)
        if run.cfg.report:
            _report(run, built, built.previous, final=True, clustering=clustering,
                    features=None if trained is None else trained[0])


def _observers(run: Run, built: Built) -> list:
    """What follows the loop on rank 0 besides training: the console, TensorBoard, the pictures."""
    return ([] if run.quiet else [Console()]) + (
        [TensorBoard(run, built.start)] if run.cfg.tensorboard else []) + [Pictures(run, built)]


def _record_epoch(run: Run, built: Built, epoch: int, lr: float, done: Epoch) -> RunState:
    """Complete the epoch's metrics row (NMI of its clusters against the previous epoch's and the labels, when
    known) and write the epoch: its row, its clusters, then the checkpoint, a copy of the state written by the
    run's writer (in the background, while training goes on). On rank 0; returns the state (not a copy)."""
    row, assignment, targets = done.row, done.assignment, run.train_set.targets
    if assignment is not None:
        row["nmi_prev"] = nmi(built.previous, assignment) if built.previous is not None else None
    row["lr"] = lr
    if targets is not None and assignment is not None:
        row["nmi_labels"] = nmi(targets, assignment)
        row["ari_labels"] = ari(targets, assignment)
    # Metrics first: a crash before the checkpoint is written makes resume redo this epoch, and it then drops the
    # row of the epoch the checkpoint does not hold.
    run.dir.append_metrics(row)
    if assignment is not None:
        run.dir.save_epoch_clusters(epoch, assignment)
    model = built.model
    state = RunState(epoch, run.cfg, model.state_dict(), model.head.out_features, built.optimizer.state_dict(),
                     assignment, **built.method.saved())
    run.writer.submit(partial(state.snapshot().save, run.dir / CHECKPOINT))
    return state


def _report(run: Run, built: Built, assignment, final: bool, clustering=None, features=None) -> None:
    """Rewrite the run's HTML report; a failure to draw it warns and never stops training."""
    from .visualize.report import Drawn, write_report

    try:
        write_report(run.dir.path, run.cfg, built.history, Drawn(built.model, run.train_set, assignment, final,
                                                                 run.device, clustering=clustering,
                                                                 features=features))
    except Exception as e:  # noqa: BLE001 - the pictures must never cost a run
        warnings.warn(f"the report was not written ({type(e).__name__}: {e}); rebuild it with "
                      f"'deepcluster report {run.dir.path}'")
