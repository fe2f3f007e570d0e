"""What using a finished run costs on a folder of N images (default 100,000): ``export``, ``assign`` and
``embed`` in images per second, each as the user runs it (the command's whole wall time: opening the run,
scanning the folder, decoding, the network), next to the bare extraction pass over the same images measured in
the same run (the network alone on images already decoded in memory).

The folder holds Fashion-MNIST's 70,000 images as 28 px PNG files, then their mirror images, up to N. The run is
DeepCluster trained one epoch on that folder with the recipe's settings (not timed: only its use is).

    .venv/bin/python benchmarks/export.py [--n 100000] [--work DIR]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepcluster.cli import main as cli
from deepcluster.data import fashion_mnist
from deepcluster.features import Reading, centre_view_features
from deepcluster.session import Images, open_run


def write_folder(root: Path, n: int) -> None:
    images = torch.cat([fashion_mnist("train").images, fashion_mnist("test").images])[:, 0].numpy()
    images = np.concatenate([images, images[:, :, ::-1]])[:n]
    root.mkdir(parents=True)
    for i, a in enumerate(images):  # one flat folder: unlabelled, as a user's folder is
        Image.fromarray(a).save(root / f"{i:06d}.png")


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    assert cli(args) == 0, args
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--work", help="folder for the images and the run (default: a temporary one, removed)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="deepcluster-export-bench-"))
    images, run = work / "images", work / "run"
    try:
        t = time.perf_counter()
        if not images.exists():
            write_folder(images, args.n)
        print(f"{args.n} PNG files written in {time.perf_counter() - t:.0f} s", flush=True)
        if not (run / "checkpoint.pt").exists():
            assert cli(["train", "--data", str(images), "--epochs", "1", "--no-report", "--device", "cpu",
                        "--out", str(run)]) == 0
        n = args.n
        t_export = timed(["export", str(run), "--overwrite"])
        t_assign = timed(["assign", str(run), "--data", str(images), "--out", str(work / "assigned.csv"),
                          "--overwrite", "--device", "cpu"])
        t_embed = timed(["embed", str(run), "--data", str(images), "--out", str(work / "features.npy"),
                         "--overwrite", "--device", "cpu"])
        with open(work / "assigned.csv", newline="") as f:
            placed = np.array([int(row["cluster"]) for row in csv.DictReader(f)])
        differ = int((placed != np.load(run / "assignments.npy")).sum())
        r = open_run(run, device="cpu", images=Images(whole=False))  # the images decoded into memory: the network alone
        t = time.perf_counter()
        centre_view_features(r.model, r.train_set, r.device, Reading(r.cfg.batch_size, 0, desc=None))
        t_net = time.perf_counter() - t
        print(f"\n{n} images, {torch.get_num_threads()} threads; whole commands, as the user waits for them:")
        print("| command | s | images/s | time / bare extraction |")
        print("|---|---|---|---|")
        for name, s in (("export (table of the run)", t_export), ("assign (folder -> clusters)", t_assign),
                        ("embed (folder -> .npy)", t_embed), ("bare extraction, images in memory", t_net)):
            print(f"| {name} | {s:.1f} | {n / s:,.0f} | {s / t_net:.2f} |")
        print(f"assign placed the training images themselves: {differ} of {n} in another cluster than the run's")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
