"""The DeepCluster loop: features -> PCA-whitening + L2 -> k-means -> pseudo-labels -> fresh head ->
one epoch on a sample drawn uniformly over clusters. Then again.

Every epoch derives its random numbers from ``(seed, epoch)``, so a run resumed from the checkpoint of epoch e
repeats epoch e + 1 exactly as an uninterrupted run would (deterministic on CPU).

The same code runs alone or under ``torchrun`` (see :mod:`deepcluster.distributed`): every process extracts its
shard, rank 0 clusters and broadcasts, every process trains on its slice of the common sample list, rank 0 writes.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed as dist
from . import recipe
from .checkpoint import load_checkpoint, save_checkpoint
from .clustering import build_clustering
from .config import Config, TrainingError
from .console import epoch_line, summary_table
from .data import default_image_size, load_datasets, make_loader, open_training_images
from .device import amp_dtype, autocast, resolve_device
from .evaluate import ari, imbalance_factor, nmi
from .evaluate.closing import evaluate_features
from .features import centre_view_features, whitened_features
from .models import DeepClusterNet, build_model, soft_reset
from .network import make_model, restore_model
from .rundir import RunDir
from .sampler import pseudo_labels, uniform_over_clusters
from .views import train_view


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 10_007 + epoch


def epoch_lr(cfg: Config, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based): ``cfg.lr``, or with the cosine schedule
    ``lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2``, from ``lr`` at the first epoch towards 0."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return cfg.lr


def epoch_samples(cfg: Config, n: int) -> int:
    """Training samples drawn per epoch: ``reassign`` passes over the ``n`` images between two clusterings (the
    reference's ``--reassign``)."""
    return max(1, round(cfg.reassign * n))


def train_on_labels(model: DeepClusterNet, optimizer, head_optimizer: Optional[torch.optim.Optimizer], dataset,
                    indices: np.ndarray, targets: np.ndarray, cfg: Config, epoch: int, device: torch.device,
                    projections: Optional[list] = None) -> float:
    """One pass over ``indices`` (dataset indices; under torchrun this process's slice of them) with the
    augmented view and cross-entropy against ``targets[index]``. With a ``projections`` list (v2), each batch's
    ``(indices, normalised head projections)`` are appended to it. Returns the mean loss over all processes."""
    size = default_image_size(cfg)
    # Each process draws its own crops and dropout masks; rank 0's are those of a single-process run.
    rank_seed = epoch_seed(cfg.seed, epoch) + 7919 * dist.rank()
    gen = torch.Generator().manual_seed(rank_seed)
    if dist.rank():
        torch.manual_seed(rank_seed)
    y_all = torch.from_numpy(targets).to(device)
    loader = make_loader(dataset, dist.shard(indices), cfg.batch_size, cfg.workers, device.type == "cuda")
    model.train()
    # Wrapped afresh each epoch: v1 has a new head, and DDP's construction hands every process rank 0's weights.
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled() else model
    amp = amp_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)  # fp16 gradients underflow unscaled
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch} train", leave=False, unit="batch",
               disable=None if dist.is_main() else True)  # None: quiet when the output is not a terminal
    for step, (images, idx) in enumerate(bar):
        x = train_view(images.to(device, non_blocking=True), size, dataset.mean, dataset.std, cfg.crop_scale,
                       generator=gen).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = model.loss(net(x), y_all[idx.to(device)])
        if projections is not None:
            projections.append((idx.numpy(), model.head.last_z.float().cpu().numpy()))
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, batch {step}: lower the "
                                f"learning rate (--lr, now {cfg.lr}); the last checkpoint is kept as it was")
        optimizer.zero_grad(set_to_none=True)
        if head_optimizer is not None:
            head_optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        if head_optimizer is not None:
            scaler.step(head_optimizer)
        scaler.update()
        total += loss.item() * len(idx)
        count += len(idx)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{total / count:.3f}")
    # DDP hands out rank 0's buffers before each forward, but the last forward then updated every rank's
    # BatchNorm statistics with its own batch: take rank 0's, so that all ranks extract with one network (the
    # one rank 0 checkpoints, which a resumed run starts from).
    dist.broadcast_buffers(model)
    total, count = dist.all_sum([total, count])
    return total / max(count, 1)


def deepcluster_epoch(model: DeepClusterNet, optimizer, dataset, cfg: Config, epoch: int,
                      device: torch.device) -> tuple[np.ndarray, dict]:
    """One DeepCluster epoch. Returns ``(assignment (N,), metrics)``."""
    # The global generator (head initialisation, dropout) restarts from (seed, epoch): resume-exact.
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    t0 = time.perf_counter()
    if cfg.reset_every and epoch > 1 and (epoch - 1) % cfg.reset_every == 0:
        fresh = build_model(cfg.arch, dataset.channels, default_image_size(cfg), cfg.sobel)
        soft_reset(model, fresh, cfg.reset_alpha, model.late_parameters())
    x = whitened_features(model, dataset, cfg, device, np.random.default_rng([cfg.seed, epoch, 1]),
                          desc=f"epoch {epoch} features")
    t1 = time.perf_counter()

    def cluster():  # on rank 0, which alone holds x: the main clustering, then one per over-clustering head
        gpu = "auto" if device.type == "cuda" else False
        clus = build_clustering(cfg, epoch_seed(cfg.seed, epoch), gpu).fit(x)
        extra = [pseudo_labels(build_clustering(replace(cfg, k=k), epoch_seed(cfg.seed, epoch) + i + 1, gpu)
                               .fit(x).labels_) for i, k in enumerate(cfg.overcluster_ks)]
        return (*pseudo_labels(clus.labels_), clus.health_, extra)

    labels, n_clusters, health, extra = dist.on_main(cluster)
    t2 = time.perf_counter()
    # One head per clustering; the sampling and the run's assignment are the main clustering's.
    targets = np.stack([labels] + [e[0] for e in extra], 1) if extra else labels
    head = model.reset_head([n_clusters] + [e[1] for e in extra] if extra else n_clusters)
    # The head has its own optimiser, without momentum, since it starts from scratch every epoch.
    head_opt = torch.optim.SGD(head.parameters(), lr=epoch_lr(cfg, epoch), weight_decay=cfg.weight_decay)
    sample = uniform_over_clusters(labels, epoch_samples(cfg, len(dataset)),
                                   np.random.default_rng([cfg.seed, epoch]))
    loss = train_on_labels(model, optimizer, head_opt, dataset, sample, targets, cfg, epoch, device)
    t3 = time.perf_counter()
    return labels, {
        "epoch": epoch, "loss": loss, "clusters": n_clusters, **health,
        "imbalance": imbalance_factor(labels, n_clusters),
        "time_features": t1 - t0, "time_clustering": t2 - t1, "time_training": t3 - t2,
    }


def v2_epoch(model: DeepClusterNet, optimizer, dataset, cfg: Config, epoch: int, device: torch.device,
             bank: Optional[torch.Tensor]) -> tuple[np.ndarray, dict, Optional[torch.Tensor]]:
    """One DeepCluster-v2 epoch: k-means on the memory bank (the projections of every image from the previous
    epoch's training pass; from a centre-view pass on the first epoch, or every epoch with ``cfg.bank ==
    "centre"``), its centroids become the prototypes, then one pass over all images in random order predicting the
    assignment, refreshing a "train" bank as it goes. Returns ``(assignment, metrics, bank)``; the bank lives on
    rank 0 (None on the other ranks)."""
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    t0 = time.perf_counter()
    if dist.broadcast_object(bank is None or cfg.bank == "centre"):  # rank 0 alone knows whether it has a bank
        bank = centre_view_features(model, dataset, cfg, device, project=lambda f: model.head.project(F.relu(f)),
                                    desc=f"epoch {epoch} bank")
        bank = torch.from_numpy(bank) if bank is not None else None
    t1 = time.perf_counter()

    def cluster():  # on rank 0, which alone holds the bank
        km = build_clustering(cfg, epoch_seed(cfg.seed, epoch), "auto" if device.type == "cuda" else False)
        km.fit(bank.numpy())
        return km.labels_, km.cluster_centers_, km.health_

    labels, centroids, health = dist.on_main(cluster)
    model.head.set_prototypes(torch.from_numpy(centroids))
    t2 = time.perf_counter()
    rng, n, m = np.random.default_rng([cfg.seed, epoch]), len(dataset), epoch_samples(cfg, len(dataset))
    order = np.concatenate([rng.permutation(n) for _ in range(-(-m // n))])[:m]  # every image once per pass
    rows = [] if cfg.bank == "train" else None
    loss = train_on_labels(model, optimizer, None, dataset, order, labels, cfg, epoch, device, projections=rows)
    if rows is not None:  # this epoch's projections become the next epoch's bank, row by dataset index
        idx, z = (np.concatenate(a) for a in zip(*rows))
        dist.gather_rows(z, idx, len(dataset), out=bank.numpy() if bank is not None else None)
    t3 = time.perf_counter()
    return labels, {
        "epoch": epoch, "loss": loss, "clusters": cfg.k, **health,
        "imbalance": imbalance_factor(labels, cfg.k),
        "time_features": t1 - t0, "time_clustering": t2 - t1, "time_training": t3 - t2,
    }, bank


def supervised_epoch(model: DeepClusterNet, optimizer, dataset, cfg: Config, epoch: int,
                     device: torch.device) -> tuple[np.ndarray, dict]:
    """One epoch of the supervised baseline: the same network, views and sampling, on the true labels (the
    head is part of ``optimizer`` and is never reset)."""
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    t0 = time.perf_counter()
    sample = uniform_over_clusters(dataset.targets, epoch_samples(cfg, len(dataset)),
                                   np.random.default_rng([cfg.seed, epoch]))
    loss = train_on_labels(model, optimizer, None, dataset, sample, dataset.targets, cfg, epoch, device)
    return dataset.targets, {"epoch": epoch, "loss": loss, "time_training": time.perf_counter() - t0}


def train(cfg: Config, out: str | Path, resume: bool = False, overwrite: bool = False,
          quiet: bool = False) -> dict:
    """Train DeepCluster as configured, writing the run to ``out``. Returns the summary
    ``{"metrics": [per-epoch rows], "eval": {...}, "run_dir": str}``.

    Under ``torchrun`` every process calls this alike; rank 0 alone prints and writes, and the summary it returns
    is the run's (the other processes return theirs without evaluation or history)."""
    cfg = replace(cfg).validate()
    joined, ended = dist.setup(cfg.device), False
    try:
        summary = _train(cfg, out, resume, overwrite, quiet or not dist.is_main())
        ended = True
        return summary
    finally:
        if joined:
            dist.teardown(wait=ended)


def _train(cfg: Config, out: str | Path, resume: bool, overwrite: bool, quiet: bool) -> dict:
    say = (lambda *a: None) if quiet else print
    main = dist.is_main()

    # ---- data (every check on the inputs comes before anything is written), and the settings it asks for:
    # a resumed run keeps the settings it was trained with; what is still unset, the recipe chooses
    run, kept = RunDir(out), {}
    train_set = open_training_images(cfg)
    saved = dist.on_main(run.saved_config) if resume and not overwrite else None
    given = cfg = recipe.take_saved(cfg, saved) if saved is not None else cfg  # the recipe chooses only the rest
    data = recipe.profile(train_set) if cfg.recipe == "auto" and recipe.left_to_recipe(cfg) else None
    cfg = recipe.resolve(cfg, data).validate()
    train_set, val_set = load_datasets(cfg, train=train_set)
    device = resolve_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed input sizes: let cuDNN pick its fastest kernels
    if cfg.tensorboard:
        from .visualize.tensorboard import check_tensorboard

        check_tensorboard()

    # ---- run directory
    def open_run():  # on rank 0; every rank gets the checkpoint, less the v2 bank, which only rank 0 uses
        resuming = run.open(cfg, resume, overwrite)
        ckpt = load_checkpoint(run / "checkpoint.pt") if resuming and (run / "checkpoint.pt").exists() else None
        run.write_config(cfg)
        if ckpt is not None:
            kept["bank"] = ckpt.pop("bank", None)
        return resuming, ckpt

    resuming, ckpt = dist.on_main(open_run)
    say(f"deepcluster: {len(train_set)} images from {train_set.name}, arch {cfg.arch}"
        f"{' + sobel' if cfg.sobel else ''}, {'PIC' if cfg.clustering == 'pic' else f'k = {cfg.k}'}, "
        f"{cfg.epochs} epochs on {device}"
        f"{f' x {dist.world_size()} processes' if dist.enabled() else ''}, run dir {run.path}")
    say(cfg.to_yaml().rstrip())
    say(recipe.describe(given, cfg, data))

    # ---- model and optimiser
    model = make_model(cfg, train_set, device)
    # v1 replaces its head every epoch and trains it with its own optimiser; the supervised baseline and v2 keep
    # one head (class layer; projection + prototypes) trained with the body.
    # The head is in place before the optimiser is made, so the optimiser holds the parameters that are trained.
    persistent_head = cfg.supervised or cfg.method == "v2"
    if ckpt is not None:
        restore_model(model, ckpt)
    elif cfg.supervised:
        model.reset_head(int(train_set.targets.max()) + 1)
    elif cfg.method == "v2":
        model.use_prototypes(cfg.k, cfg.proj_dim, cfg.temperature)
    optimizer = torch.optim.SGD(model.parameters() if persistent_head else model.body_parameters(), lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start, previous, history, bank = 1, None, [], None
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        start, previous, bank = ckpt["epoch"] + 1, ckpt["assignment"].numpy(), kept.get("bank")
        history = run.keep_metrics(ckpt["epoch"]) if main else []
        say(f"resuming after epoch {ckpt['epoch']}")
    elif resuming and main:
        history = run.keep_metrics(0)

    # ---- the DeepCluster loop
    labels_known = train_set.targets is not None
    tb = None
    if cfg.tensorboard and main:
        from .visualize.tensorboard import TensorBoardLog

        tb = TensorBoardLog(run.path, first_epoch=start)
    for epoch in tqdm(range(start, cfg.epochs + 1), desc="deepcluster", unit="epoch", initial=start - 1,
                      total=cfg.epochs, disable=True if quiet else None):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        if cfg.supervised:
            assignment, row = supervised_epoch(model, optimizer, train_set, cfg, epoch, device)
        elif cfg.method == "v2":
            assignment, row, bank = v2_epoch(model, optimizer, train_set, cfg, epoch, device, bank)
        else:
            assignment, row = deepcluster_epoch(model, optimizer, train_set, cfg, epoch, device)
        if not main:
            continue
        if not cfg.supervised:
            row["nmi_prev"] = nmi(previous, assignment) if previous is not None else None
        row["lr"] = epoch_lr(cfg, epoch)
        if labels_known and not cfg.supervised:
            row["nmi_labels"] = nmi(train_set.targets, assignment)
            row["ari_labels"] = ari(train_set.targets, assignment)
        previous = assignment
        # Metrics first: a crash before the checkpoint is written makes resume redo this epoch, and it then
        # drops the row of the epoch the checkpoint does not hold.
        run.append_metrics(row)
        save_checkpoint(run / "checkpoint.pt", {
            "epoch": epoch, "config": cfg.to_dict(), "arch": cfg.arch, "model": model.state_dict(),
            "head_classes": model.head.out_features, "optimizer": optimizer.state_dict(),
            "assignment": torch.from_numpy(assignment), **({"bank": bank} if bank is not None else {})})
        history.append(row)
        if not quiet:
            tqdm.write(epoch_line(row))
        if tb is not None:
            tb.epoch(row, train_set, assignment, cfg.seed)
        if cfg.report and epoch < cfg.epochs:
            _report(run, cfg, history, model, train_set, assignment, device, final=False)

    # ---- what the run leaves: assignment, evaluation, pictures
    import matplotlib.pyplot as plt

    from .visualize import plot_curves, save_cluster_grid

    eval_set = val_set if val_set is not None and val_set.targets is not None else (
        train_set if labels_known else None)
    db = train_set if eval_set is not train_set and labels_known else None  # kNN votes: else leave-one-out
    evaluation = evaluate_features(model, cfg, eval_set, device, db) if eval_set is not None else {}
    if not main:
        return {"metrics": history, "eval": evaluation, "run_dir": str(run.path)}
    if previous is not None and not cfg.supervised:
        run.save_array("assignments.npy", previous)
    if evaluation:
        run.write_json("eval.json", evaluation)
    if tb is not None:
        tb.evaluation(evaluation, cfg.epochs)
        tb.close()
    plt.close(plot_curves(history, run / "curves.png"))
    if previous is not None and not cfg.supervised:
        save_cluster_grid(train_set, previous, run / "clusters.png", seed=cfg.seed)
    if cfg.report:
        _report(run, cfg, history, model, train_set, previous, device, final=True)
    say(summary_table(history, evaluation, run.path))
    return {"metrics": history, "eval": evaluation, "run_dir": str(run.path)}


def _report(run: RunDir, cfg: Config, history: list[dict], model, dataset, assignment, device, final: bool) -> None:
    """Rewrite the run's HTML report; a failure to draw it warns and never stops training."""
    from .visualize import write_report

    try:
        write_report(run.path, cfg, history, model=model, dataset=dataset, assignment=assignment, final=final,
                     device=device)
    except Exception as e:  # noqa: BLE001 - the pictures must never cost a run
        warnings.warn(f"the report was not written ({type(e).__name__}: {e}); rebuild it with "
                      f"'deepcluster report {run.path}'")


