"""What one DeepCluster epoch costs on the demo network and data, next to one plain supervised epoch.

Prints images/s of feature extraction and of training, the clustering time (PCA-whitening + k-means), and the
ratio of one DeepCluster epoch to one supervised epoch of the same network on the same images, all measured in
this one run, alternating the two kinds of epoch so that the machine's load falls on both alike.

    .venv/bin/python benchmarks/epoch.py [--images 10000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from deepcluster import Config
from deepcluster.data import load_datasets
from deepcluster.train import deepcluster_epoch, make_model, train_on_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/fashion-mnist.yaml")
    ap.add_argument("--images", type=int, default=10000, help="training images used (the first N)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating (DeepCluster, supervised) epoch pairs")
    ap.add_argument("--k", type=int, default=100, help="clusters (default 100, the figure in the README's table)")
    args = ap.parse_args()

    cfg = Config.from_yaml(args.config)
    cfg.subset, cfg.k, cfg.device = args.images, args.k, "cpu" if not torch.cuda.is_available() else "cuda"
    cfg.validate()
    data, _ = load_datasets(cfg)
    device = torch.device(cfg.device)
    model = make_model(cfg, data, device)
    opt = torch.optim.SGD(model.body_parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = len(data)
    print(f"{n} images of {data.name}, arch {cfg.arch}, k = {cfg.k}, batch {cfg.batch_size}, "
          f"{torch.get_num_threads()} threads, device {device}")

    dc, sup, parts = [], [], []
    for r in range(args.rounds):
        t = time.perf_counter()
        _, m = deepcluster_epoch(model, opt, data, cfg, epoch=r + 1, device=device)
        dc.append(time.perf_counter() - t)
        parts.append(m)

        head = model.reset_head(len(data.classes))
        head_opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        order = np.random.default_rng(r).permutation(n)
        t = time.perf_counter()
        train_on_labels(model, opt, head_opt, data, order, data.targets, cfg, r + 1, device)
        sup.append(time.perf_counter() - t)

    med = lambda key: statistics.median(p[key] for p in parts)
    rows = [
        ("feature extraction", f"{n / med('time_features'):,.0f} images/s"),
        ("training (DeepCluster epoch)", f"{n / med('time_training'):,.0f} images/s"),
        ("training (supervised epoch)", f"{n / statistics.median(sup):,.0f} images/s"),
        ("clustering (PCA + k-means)", f"{med('time_clustering'):.2f} s"),
        ("DeepCluster epoch", f"{statistics.median(dc):.1f} s"),
        ("supervised epoch", f"{statistics.median(sup):.1f} s"),
        ("DeepCluster / supervised epoch", f"{statistics.median(dc) / statistics.median(sup):.2f}"),
        ("  share: extraction / clustering / training",
         f"{med('time_features') / statistics.median(dc):.0%} / {med('time_clustering') / statistics.median(dc):.0%}"
         f" / {med('time_training') / statistics.median(dc):.0%}"),
    ]
    w = max(len(a) for a, _ in rows)
    print(f"median of {args.rounds} alternating rounds:")
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")


if __name__ == "__main__":
    main()
