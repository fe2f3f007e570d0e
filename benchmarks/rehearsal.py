"""A rehearsal at scale: what a user runs on a large labelled folder, with the defaults, timed stage by stage at
100,000 and 1,000,000 images on this machine.

The folders (built once, offline, cached under ``--work``): Fashion-MNIST's 60,000 training images under random
crops (padded by 4 px, a 28 px window at a random place), horizontal flips and intensity changes (contrast x
0.6-1.2, a gamma of 0.7-1.4), N of them as 28 px PNG files in one subfolder per class (``src-N/CLASS/``), and
10,000 new images drawn the same way from the test split (``new-10000/``, unlabelled: what ``assign`` places).
A folder is written under a temporary name and renamed when complete, so one that exists is whole; the same seed
gives the same images.

Then, for each size, each stage as the user types it (``deepcluster ...`` in a process of its own):

    prepare SRC PREP                     train --data PREP --out RUN --epochs 1 (the recipe's k for N,
    export RUN                           then the final clustering and the closing evaluation, bounded)
    export RUN --clusters 10             assign RUN --data NEW        embed RUN --data NEW
    duplicates RUN                       sample RUN                   report RUN (page + cluster browser)

It prints each stage's wall time and peak resident memory (the kernel's high-water mark of the stage's process
and of its children, ``wait4``'s ``ru_maxrss``), and, over the two sizes, each stage's growth exponent
``log(t_1M / t_100k) / log(10)`` (1: linear; N log N from 100k to 1M reads about 1.1). k-means' work is N x k,
so train's exponent is set beside k's growth.

    .venv/bin/python benchmarks/rehearsal.py [--sizes 100000,1000000] [--work /tmp/rehearsal] [--seed 0]
    .venv/bin/python benchmarks/rehearsal.py --build-only ...     # the folders alone
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NEW_IMAGES = 10_000
PEAK_LIMIT_GB = 8.0


def fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    from deepcluster.data import fashion_mnist

    ds = fashion_mnist(split)
    return ds.images[:, 0].numpy(), np.asarray(ds.targets)


def augmented(images: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` draws from ``images (M, 28, 28)``: which image, a 28 px window of it padded by 4, a horizontal flip
    half the time, contrast x U(0.6, 1.2) and a gamma of U(0.7, 1.4). Returns the images and the indices drawn."""
    pick = rng.integers(len(images), size=n)
    padded = np.pad(images[pick], ((0, 0), (4, 4), (4, 4)))
    dy, dx = rng.integers(9, size=n), rng.integers(9, size=n)
    rows = dy[:, None] + np.arange(28)[None]
    cols = dx[:, None] + np.arange(28)[None]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    x = out.astype(np.float32) / 255
    x = np.clip(x * rng.uniform(0.6, 1.2, size=(n, 1, 1)), 0, 1) ** rng.uniform(0.7, 1.4, size=(n, 1, 1))
    return (x * 255).round().astype(np.uint8), pick


def write_folder(dest: Path, n: int, split: str, labelled: bool, seed: int) -> Path:
    """``dest`` holding ``n`` augmented images of ``split`` as PNGs (one subfolder per class when ``labelled``);
    built under a temporary name and renamed, kept when it exists."""
    if dest.is_dir():
        return dest
    from deepcluster.data.fashion_mnist import FASHION_MNIST_CLASSES

    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    images, labels = fashion(split)
    names = [c.replace("/", "-").replace(" ", "-").lower() for c in FASHION_MNIST_CLASSES]
    for c in (names if labelled else ["."]):
        (tmp / c).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for start in range(0, n, 50_000):
        batch, pick = augmented(images, min(50_000, n - start), rng)
        for j, (a, y) in enumerate(zip(batch, labels[pick])):
            sub = names[y] if labelled else "."
            Image.fromarray(a).save(tmp / sub / f"{start + j:07d}.png", compress_level=1)
        print(f"  {dest.name}: {start + len(batch):,} / {n:,} images ({time.perf_counter() - t:.0f} s)", flush=True)
    tmp.rename(dest)
    return dest


def build(work: Path, sizes: list[int], seed: int) -> dict:
    """The source folder of each size and the folder of new images."""
    work.mkdir(parents=True, exist_ok=True)
    out = {"new": write_folder(work / f"new-{NEW_IMAGES}", NEW_IMAGES, "test", False, seed + 1)}
    for n in sizes:
        out[n] = write_folder(work / f"src-{n}", n, "train", True, seed)
    return out


# A small process that starts the stage and reports its peak: a child's high-water mark starts from the memory of
# the process it was forked from (the kernel keeps it across exec), so the stage is forked from this one, not from
# the benchmark with its images and torch loaded.
LAUNCHER = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[2:])\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")


def stage(args: list[str], log: Path) -> tuple[float, float]:
    """Run ``deepcluster ARGS`` in a process of its own, its output appended to ``log``: (wall seconds, peak
    resident GB of the process and of its children, the kernel's ``ru_maxrss``)."""
    peak = log.with_suffix(".peak")
    cmd = [sys.executable, "-c", LAUNCHER, str(peak), sys.executable, "-m", "deepcluster", *args]
    with open(log, "a") as f:
        f.write(f"\n$ deepcluster {' '.join(args)}\n")
        f.flush()
        t = time.perf_counter()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"rehearsal: 'deepcluster {' '.join(args)}' failed (exit {code}): see {log}")
    return wall, int(peak.read_text()) / 2 ** 20  # KiB -> GiB


def stages(n: int, folders: dict, work: Path) -> list[tuple[str, list[str]]]:
    prep, run, new = work / f"prep-{n}", work / f"run-{n}", folders["new"]
    for p in (prep, run):
        shutil.rmtree(p, ignore_errors=True)
    return [
        ("prepare", ["prepare", str(folders[n]), str(prep)]),
        ("train (1 epoch, final clustering, evaluation)", ["train", "--data", str(prep), "--out", str(run),
                                                            "--epochs", "1"]),
        ("export", ["export", str(run)]),
        ("export --clusters 10", ["export", str(run), "--clusters", "10"]),
        (f"assign {NEW_IMAGES:,} new", ["assign", str(run), "--data", str(new)]),
        (f"embed {NEW_IMAGES:,} new", ["embed", str(run), "--data", str(new), "--out", str(run / "new.npy")]),
        ("duplicates", ["duplicates", str(run)]),
        ("sample", ["sample", str(run)]),
        ("report (page + cluster browser)", ["report", str(run)]),
    ]


def run_k(run: Path) -> int:
    import yaml

    return int(yaml.safe_load((run / "config.yaml").read_text())["k"])


def evaluation(run: Path) -> str:
    """The closing evaluation's table in a few lines: how many images it scored, each row's NMI, the kNN top-1."""
    ev = json.loads((run / "eval.json").read_text())
    kn = ev["knn"]
    return "\n".join([f"closing evaluation: {ev['images']:,} of {ev['of']:,} images, k = {ev['k']}; kNN votes from "
                      f"{kn['database_images']:,} images ({kn['database']})",
                      *(f"  NMI {r['nmi']:.3f}  ACC {r['acc']:.3f}  {r['features']}, {r['preprocessing']}"
                        for r in ev["results"]),
                      "  kNN top-1: " + ", ".join(f"{r['features']} {r['layer']} {r['top1']:.3f}"
                                                  for r in kn["results"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--work", type=Path, default=Path("/tmp/rehearsal"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    t = time.perf_counter()
    folders = build(args.work, sizes, args.seed)
    print(f"folders ready ({time.perf_counter() - t:.0f} s)", flush=True)
    if args.build_only:
        return
    table: dict = {}
    for n in sizes:
        log = args.work / f"log-{n}.txt"
        log.unlink(missing_ok=True)
        for name, cmd in stages(n, folders, args.work):
            wall, peak = stage(cmd, log)
            table.setdefault(name, {})[n] = (wall, peak)
            print(f"N = {n:>9,}  {name:<48} {wall:8.1f} s  peak {peak:5.2f} GB", flush=True)
        table.setdefault("k", {})[n] = run_k(args.work / f"run-{n}")
        print(evaluation(args.work / f"run-{n}"), flush=True)
    report(table, sizes)


def report(table: dict, sizes: list[int]) -> None:
    head = "| stage | " + " | ".join(f"N = {n:,}: time, peak memory" for n in sizes)
    grows = len(sizes) > 1
    print("\n" + head + (" | growth exponent |" if grows else " |"))
    print("|---|" + "---:|" * (len(sizes) + grows))
    ks = table.pop("k")
    failed = []
    for name, cells in table.items():
        row = [f"{cells[n][0]:,.0f} s, {cells[n][1]:.2f} GB" for n in sizes]
        if grows:
            a, b = sizes[0], sizes[-1]
            row.append(f"{math.log(cells[b][0] / cells[a][0]) / math.log(b / a):.2f}")
        failed += [f"{name} at N = {n:,}: {cells[n][1]:.2f} GB" for n in sizes if cells[n][1] > PEAK_LIMIT_GB]
        print(f"| {name} | " + " | ".join(row) + " |")
    a, b = sizes[0], sizes[-1]
    nk = f"; N x k grows with exponent {math.log(b * ks[b] / (a * ks[a])) / math.log(b / a):.2f}" if grows else ""
    print("\nk (the recipe's): " + ", ".join(f"{ks[n]:,} at N = {n:,}" for n in sizes) + nk)
    print("peak memory within 8 GB at every stage" if not failed else "over 8 GB: " + "; ".join(failed))


if __name__ == "__main__":
    main()
