"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2``: one DeepCluster epoch's stages on a
folder of generated images, each rank saving what it holds to ``OUT/rank<r>.npz``.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_worker.py IMAGES OUT

With ``full-disk TRAIN_ARGS...`` instead, it runs ``deepcluster train TRAIN_ARGS`` with rank 0's disk full from its
first metrics row on (every ``fsync`` fails with ENOSPC) and the other rank slow to print the error, and exits
with the command's status.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepcluster import Config
from deepcluster import distributed as dist
from deepcluster.device import Precisions
from deepcluster.features import Reading, centre_view_features
from deepcluster.recipe import resolve
from deepcluster.sampler import uniform_over_clusters
from deepcluster.session import datasets, fresh_network
from deepcluster.space import Fitting, clustering_input
from deepcluster.train import method_for


def worker_config(images: str) -> Config:
    # pca_sample < N: the PCA is fitted on a sample and the other images are projected while extracted
    return resolve(Config(data=images, recipe="paper", arch="small", image_size=32, k=6, batch_size=8, pca_dim=16,
                          pca_sample=20, device="cpu")).validate()


def stages(cfg: Config) -> dict:
    """What one process holds after each stage of epoch 1 (features and whitened features: rank 0 only)."""
    data, _ = datasets(cfg)
    device = torch.device("cpu")
    model = fresh_network(cfg, data.channels, device)
    feats = centre_view_features(model, data, device, Reading(cfg.batch_size, desc=None))
    _, x = clustering_input(model, data, device, Reading(cfg.batch_size, desc=None),
                            Fitting("whitened", np.random.default_rng([cfg.seed, 1, 1]), cfg.pca_dim, cfg.pca_sample))
    opt = torch.optim.SGD(model.body_parameters(), lr=cfg.lr, momentum=cfg.momentum)
    labels = method_for(cfg, device, Precisions.of(cfg, device, len(data))).epoch(model, opt, data, 1).assignment
    sample = uniform_over_clusters(labels, len(data), np.random.default_rng([cfg.seed, 1]))
    # parameters and buffers (BatchNorm statistics): every rank must extract with the same network
    weights = torch.cat([p.detach().flatten() for p in model.body_parameters()] +
                        [b.detach().float().flatten() for b in model.buffers()]).numpy()
    return {"feats": feats, "x": x, "labels": labels, "sample": sample, "mine": dist.shard(sample),
            "weights": weights}


def full_disk_on_rank0() -> None:
    import errno
    import os

    from deepcluster.rundir import RunDir

    append = RunDir.append_metrics

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full(self, row):
        os.fsync = fsync
        return append(self, row)

    if int(os.environ["RANK"]) == 0:
        RunDir.append_metrics = full
    else:  # the other rank is slower to report the error: rank 0 must not leave (torchrun would stop it) first
        import deepcluster.cli as cli

        report = cli.one_line
        cli.one_line = lambda e: (time.sleep(2.0), report(e))[1]


if __name__ == "__main__" and sys.argv[1] == "full-disk":
    from deepcluster.cli import main

    full_disk_on_rank0()
    sys.exit(main(["train", *sys.argv[2:]]))
elif __name__ == "__main__":
    dist.setup("cpu")
    got = stages(worker_config(sys.argv[1]))
    if dist.is_main():
        time.sleep(1.0)  # rank 0 is still writing when the other ranks are done
    np.savez(Path(sys.argv[2]) / f"rank{dist.rank()}.npz",
             **{k: v if v is not None else np.zeros(0) for k, v in got.items()})
    rank = dist.rank()
    dist.teardown()
    (Path(sys.argv[2]) / f"left{rank}").write_text(repr(time.time()))
