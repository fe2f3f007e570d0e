"""The projected cost of an ImageNet epoch (AlexNet, k = 10,000) in docs/scaling.md, computed from measured rates.

An epoch is an extraction pass and a training pass over N images plus the clustering stage. Each pass runs at the
slower of the loader and the network: ``N / min(loader, G x network rate)`` with G GPUs. The clustering stage on
the CPU is k-means' 20 iterations plus its final assignment at the measured seconds per iteration, scaled from
N = 1M to N (each iteration is N x k x 256 multiply-adds): the one figure here that is an extrapolation, from a
measured rate. DDP's gradient all-reduce is taken as free (several GPUs have not run here).

Every input is an option whose default is the measured figure, and where it was measured:

    .venv/bin/python benchmarks/projection.py                   # the table of docs/scaling.md
    .venv/bin/python benchmarks/projection.py --gpu-train 14174  # e.g. fp32 training instead of bf16
"""
from __future__ import annotations

import argparse

IMAGENET = 1_281_167
PAPER_EPOCHS = 500

# (option, default, where it was measured): the rates of docs/scaling.md's tables
INPUTS = [
    ("cpu_extract", 63.0, "images/s, AlexNet 224 px extraction on the 2 cores here, fp32 batch 32 "
                          "(scaling.py network --batch 32 --steps 3 --precision fp32)"),
    ("cpu_train", 18.0, "images/s, the same network's SGD step here (same command)"),
    ("cpu_kmeans_iteration", 35.2, "s per k-means iteration at N = 1,000,000, k = 10,000, d = 256, faiss on 2 "
                                   "threads here (scaling.py kmeans)"),
    ("gpu_extract", 46261.0, "images/s, extraction on one H200 in bf16, batch 256 (scaling.py network, "
                             "2026-11-26)"),
    ("gpu_train", 20670.0, "images/s, training step on one H200 in bf16 (same command)"),
    ("gpu_clustering", 13.0, "s, the clustering stage at ImageNet's size on the H200 (PCA fit, k-means 6.4 s, "
                             "pseudo-labels, sample list; 2026-11-26)"),
    ("loader_16", 2560.0, "images/s, the ImageNet-like JPEG loader with 16 workers on the H200 machine's 16 cores "
                          "(scaling.py loading --workers 16)"),
]


def epoch(n: int, extract: float, train: float, loader: float | None, clustering: float) -> tuple[float, ...]:
    """(extraction s, training s, clustering s, epoch s) of one epoch over ``n`` images."""
    cap = (lambda rate: min(rate, loader)) if loader else (lambda rate: rate)
    e, t = n / cap(extract), n / cap(train)
    return e, t, clustering, e + t + clustering


def duration(s: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if s >= 1.5 * size if unit != "min" else s >= 90:
            return f"{s / size:.1f} {unit}"
    return f"{s:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=IMAGENET)
    for name, default, source in INPUTS:
        ap.add_argument("--" + name.replace("_", "-"), type=float, default=default, help=source)
    a = ap.parse_args()
    cpu_kmeans = a.cpu_kmeans_iteration * 21 * a.n / 1_000_000
    per_core = a.loader_16 / 16
    rows = [
        ("2 CPU cores (here)", epoch(a.n, a.cpu_extract, a.cpu_train, None, cpu_kmeans)),
        ("1 GPU, 16 cores (loader)", epoch(a.n, a.gpu_extract, a.gpu_train, a.loader_16, a.gpu_clustering)),
        ("1 GPU, network alone (loader not limiting)", epoch(a.n, a.gpu_extract, a.gpu_train, None, a.gpu_clustering)),
        ("8 GPUs, 16 cores (loader)", epoch(a.n, 8 * a.gpu_extract, 8 * a.gpu_train, a.loader_16, a.gpu_clustering)),
        (f"8 GPUs, 96 cores (loader {96 * per_core:,.0f}/s at {per_core:.0f} per core)",
         epoch(a.n, 8 * a.gpu_extract, 8 * a.gpu_train, 96 * per_core, a.gpu_clustering)),
        ("8 GPUs, network alone", epoch(a.n, 8 * a.gpu_extract, 8 * a.gpu_train, None, a.gpu_clustering)),
    ]
    print(f"N = {a.n:,}; k-means on the CPU: {a.cpu_kmeans_iteration} s per iteration at 1M x 21 x N / 1M = "
          f"{cpu_kmeans:.0f} s (extrapolated from the measured rate)")
    print("inputs: " + "; ".join(f"{n} {getattr(a, n):g}" for n, _, _ in INPUTS))
    print(f"\n| setting | extraction pass | training pass | clustering | epoch | {PAPER_EPOCHS} epochs (the paper) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (e, t, c, total) in rows:
        print(f"| {name} | {duration(e)} | {duration(t)} | {duration(c)} | **{duration(total)}** | "
              f"{duration(PAPER_EPOCHS * total)} |")


if __name__ == "__main__":
    main()
