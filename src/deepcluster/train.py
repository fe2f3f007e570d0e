"""The DeepCluster loop: features -> PCA-whitening + L2 -> k-means -> pseudo-labels -> fresh head ->
one epoch on a sample drawn uniformly over clusters. Then again. The epochs themselves are the methods of
:mod:`deepcluster.training`; this module runs them and owns the run: its directory, its state, what it leaves.

The same code runs alone or under ``torchrun`` (see :mod:`deepcluster.distributed`): every process extracts its
shard, rank 0 clusters and broadcasts, every process trains on its slice of the common sample list, rank 0 writes.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed as dist
from . import recipe
from .checkpoint import BackgroundWriter
from .clusters import embed, fit_run_clustering, whitened
from .config import Config
from .console import epoch_line, summary_table
from .data import ImageFolder, load_datasets, open_training_images
from .device import (
    check_extraction,
    extraction_dtype,
    kept_dtype,
    precision_name,
    resolve_device,
    resolve_precisions,
)
from .evaluate import ari, nmi
from .evaluate.closing import closing_features, closing_width, evaluate_features
from .network import make_model, restore_model
from .rundir import FEATURES, RunDir
from .state import CHECKPOINT, RunState
from .training import DeepClusterV1, epoch_lr, epoch_seed, method_for


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
        self.started, self.parts = started, {}

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


def _train(cfg: Config, out: str | Path, resume: bool, overwrite: bool, quiet: bool, started: float,
           writer: BackgroundWriter) -> dict:
    say = (lambda *a: None) if quiet else print
    main = dist.is_main()
    clock = Clock(started)

    # ---- data (every check on the inputs comes before anything is written), and the settings it asks for:
    # a resumed run keeps the settings it was trained with; what is still unset, the recipe chooses
    run = RunDir(out)
    with clock.part("data"):
        train_set = open_training_images(cfg)
        saved = dist.on_main(run.saved_config) if resume and not overwrite else None
        given = cfg = recipe.take_saved(cfg, saved) if saved is not None else cfg  # the recipe chooses the rest
        data = recipe.profile(train_set) if cfg.recipe == "auto" and recipe.left_to_recipe(cfg) else None
        cfg = recipe.resolve(cfg, data).validate().check_data(len(train_set), train_set.targets is not None,
                                                              train_set.name)
        train_set, val_set = load_datasets(cfg, train=train_set)
    device = resolve_device(cfg.device)
    check_extraction(cfg, device)
    cfg = resolve_precisions(cfg, device, len(train_set))  # config.yaml says what this machine computes in
    extract = extraction_dtype(cfg, device, len(train_set))  # from epoch 2 on
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed input sizes: let cuDNN pick its fastest kernels
    if cfg.tensorboard:
        from .visualize.tensorboard import check_tensorboard

        check_tensorboard()

    # ---- run directory; every rank gets the saved state, less the v2 bank, which only rank 0 uses
    def open_run():  # on rank 0
        resuming = run.open(cfg, resume, overwrite)
        state = RunState.load(run / CHECKPOINT) if resuming and (run / CHECKPOINT).exists() else None
        run.write_config(cfg)
        return resuming, state

    resuming, state = dist.on_main(open_run, share=lambda r: (r[0], r[1] and r[1].without_bank()))
    say(f"deepcluster: {len(train_set)} images from {train_set.name}, arch {cfg.arch}"
        f"{' + sobel' if cfg.sobel else ''}, {'PIC' if cfg.clustering == 'pic' else f'k = {cfg.k}'}, "
        f"{cfg.epochs} epochs on {device}"
        f"{f' x {dist.world_size()} processes' if dist.enabled() else ''}, "
        f"{precision_name(extract)} extraction, run dir {run.path}")
    say(cfg.to_yaml().rstrip())
    say(recipe.describe(given, cfg, data))
    if isinstance(train_set, ImageFolder) and cfg.cache_gb > 0:  # too large to decode once into memory
        say(f"note: the images do not fit --cache-gb {cfg.cache_gb:g} (or half the free memory), so every pass "
            f"decodes the files again; 'deepcluster prepare {train_set.root} DEST' once, then --data DEST, reads "
            f"them 3-5x faster (and on a GPU decodes them there)")

    # ---- model, method and optimiser
    with clock.part("set-up"):
        model = make_model(cfg, train_set.channels, device)
        if state is not None:
            restore_model(model, state)
        method = method_for(cfg, device, state)
        optimizer = method.start(model, train_set, state)
    start, previous, history = 1, None, []
    if state is not None:
        start, previous = state.epoch + 1, state.assignment
        history = run.keep_metrics(state.epoch) if main else []
        say(f"resuming after epoch {state.epoch}")
    elif resuming and main:
        history = run.keep_metrics(0)

    # ---- the DeepCluster loop
    labels_known = train_set.targets is not None
    eval_set = val_set if val_set is not None and val_set.targets is not None else (
        train_set if labels_known else None)
    db = train_set if eval_set is not train_set and labels_known else None  # kNN votes: else leave-one-out
    # The closing evaluation compares with the random network, which epoch 1 reads anyway: keep its features of
    # the training images when they are evaluated and take at most 1 GiB (one process; all fitted by the PCA).
    if isinstance(method, DeepClusterV1) and start == 1 and not dist.enabled() and train_set in (eval_set, db):
        per_image = model.feature_dim + closing_width(model, train_set.channels, device)
        method.keep_first = len(train_set) <= cfg.pca_sample and len(train_set) * per_image * 4 <= 2 ** 30
    tb, reported = None, started
    # Rank 0 writes checkpoints in the background: an epoch's, a copy, while the next epoch runs; the final one
    # while what follows only reads the weights. An error of a write stops every rank at the next epoch's start.
    landed = lambda: dist.on_main(writer.wait, share=lambda _: None)
    if cfg.tensorboard and main:
        from .visualize.tensorboard import TensorBoardLog

        tb = TensorBoardLog(run.path, first_epoch=start)
    for epoch in tqdm(range(start, cfg.epochs + 1), desc="deepcluster", unit="epoch", initial=start - 1,
                      total=cfg.epochs, disable=True if quiet else None):
        lr = epoch_lr(cfg.lr, cfg.lr_schedule, cfg.epochs, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with clock.part("checkpoints"):
            dist.on_main(writer.check, share=lambda _: None)
        with clock.part("epochs"):
            assignment, row = method.epoch(model, optimizer, train_set, epoch)

        # rank 0 writes the epoch; an error there (a full disk) stops every rank with its line
        with clock.part("checkpoints"):
            state = dist.on_main(partial(_record_epoch, run, cfg, method, model, optimizer, epoch, lr, row,
                                         assignment, previous, train_set.targets if labels_known else None,
                                         writer), share=lambda _: None)
        if not main:
            continue
        previous = assignment
        history.append(row)
        if not quiet:
            tqdm.write(epoch_line(row))
        with clock.part("reports"):
            if tb is not None:
                tb.epoch(row, train_set, assignment, cfg.seed)
            if cfg.report and epoch < cfg.epochs and time.perf_counter() - reported >= REPORT_EVERY:
                _report(run, cfg, history, model, train_set, assignment, device, final=False)
                reported = time.perf_counter()

    # ---- what the run leaves: the trained network's clustering (kept in the state), evaluation, pictures
    clustering, final = None, None
    need_clustering = method.clusters and dist.broadcast_object(main and state.clustering is None)
    # One process, at most pca_sample images: one pass of the trained network over the training images serves the
    # final clustering, the closing evaluation (fc and last conv layer) and the report's map.
    with clock.part("final clustering"):
        trained = closing_features(model, train_set, cfg, device, "final features") if not dist.enabled() and (
            len(train_set) <= cfg.pca_sample and (need_clustering or train_set in (eval_set, db))) else None
        if method.clusters:
            clustering = state.clustering if main else None  # a finished run resumed keeps the one it has
            if need_clustering:
                clustering, final = fit_run_clustering(model, train_set, cfg, device,
                                                       epoch_seed(cfg.seed, cfg.epochs + 1),
                                                       fc=None if trained is None else trained[0])
            elif main and not dist.enabled() and not (run / FEATURES).exists():
                # a run finished before runs kept their final features: the saved clustering's space, again
                final = embed(model, train_set, clustering, device, cfg.batch_size, cfg.workers,
                              kept_dtype(cfg, device), desc="final features", alone=True)
    if need_clustering:
        def keep():
            kept = replace(state, clustering=clustering)
            writer.submit(partial(kept.save, run / CHECKPOINT))
            return kept

        with clock.part("checkpoints"):
            state = dist.on_main(keep, share=lambda _: None)
    if method.clusters and main:
        previous = clustering.labels[0]

    known = {("trained", train_set): trained} if trained is not None else {}
    if trained is not None and need_clustering and clustering.space == "whitened":
        # the PCA-whitening the final clustering fitted on these very features: the evaluation's too
        known[("trained", train_set)] = (*trained, whitened(trained[0], clustering))
    if getattr(method, "first_features", None) is not None:
        known[("random-init", train_set)] = method.first_features
        method.first_features = None
    with clock.part("evaluation"):
        evaluation = evaluate_features(model, cfg, eval_set, device, db, known) if eval_set is not None else {}

    def write_results():
        if previous is not None and method.clusters:
            run.save_array("assignments.npy", previous)
        if final is not None:
            run.save_features(final)
        if evaluation:
            run.write_json("eval.json", evaluation)

    with clock.part("checkpoints"):
        landed()
    dist.on_main(write_results)
    if not main:
        return {"metrics": history, "eval": evaluation, "run_dir": str(run.path)}
    with clock.part("reports"):
        import matplotlib.pyplot as plt

        from .visualize import plot_curves, save_cluster_grid

        if tb is not None:
            tb.evaluation(evaluation, cfg.epochs)
            tb.close()
        if not cfg.report:  # else the report writes it
            plt.close(plot_curves(history, run / "curves.png"))
        if previous is not None and method.clusters:
            save_cluster_grid(train_set, previous, run / "clusters.png", seed=cfg.seed)
        if cfg.report:
            _report(run, cfg, history, model, train_set, previous, device, final=True, clustering=clustering,
                    features=None if trained is None else trained[0])
    timing = clock.record()
    run.write_json("timing.json", timing)
    kept = kept_dtype(cfg, device)
    precisions = f"training {cfg.precision}, clustering passes {precision_name(extract)}" + (
        f" from epoch 2 (epoch 1, final clustering and evaluation {precision_name(kept)})" if extract != kept else "")
    say(summary_table(history, evaluation, run.path, timing, precisions))
    return {"metrics": history, "eval": evaluation, "run_dir": str(run.path), "timing": timing}


def _record_epoch(run: RunDir, cfg: Config, method, model, optimizer, epoch: int, lr: float, row: dict, assignment,
                  previous, targets, writer: BackgroundWriter) -> RunState:
    """Complete the epoch's metrics row (NMI against the previous assignment and the labels, when known) and write
    the epoch: its row, its clusters, then the checkpoint, a copy of the state written by ``writer`` (in the
    background, while training goes on). Returns the state (not a copy)."""
    if method.clusters:
        row["nmi_prev"] = nmi(previous, assignment) if previous is not None else None
    row["lr"] = lr
    if targets is not None and method.clusters:
        row["nmi_labels"] = nmi(targets, assignment)
        row["ari_labels"] = ari(targets, assignment)
    # Metrics first: a crash before the checkpoint is written makes resume redo this epoch, and it then drops the
    # row of the epoch the checkpoint does not hold.
    run.append_metrics(row)
    if method.clusters:
        run.save_epoch_clusters(epoch, assignment)
    state = RunState(epoch, cfg, model.state_dict(), model.head.out_features, optimizer.state_dict(),
                     assignment, **method.saved())
    writer.submit(partial(state.snapshot().save, run / CHECKPOINT))
    return state


def _report(run: RunDir, cfg: Config, history: list[dict], model, dataset, assignment, device, final: bool,
            clustering=None, features=None) -> None:
    """Rewrite the run's HTML report; a failure to draw it warns and never stops training."""
    from .visualize import write_report

    try:
        write_report(run.path, cfg, history, model=model, dataset=dataset, assignment=assignment, final=final,
                     device=device, clustering=clustering, features=features)
    except Exception as e:  # noqa: BLE001 - the pictures must never cost a run
        warnings.warn(f"the report was not written ({type(e).__name__}: {e}); rebuild it with "
                      f"'deepcluster report {run.path}'")


