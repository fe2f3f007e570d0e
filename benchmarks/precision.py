"""The clustering's extraction pass in reduced precision next to fp32, on a trained run's network and images, in
one run.

    .venv/bin/python benchmarks/precision.py RUN_DIR [--precisions fp32,int8,bf16] [--seeds 3] [--rounds 2]
                                                     [--device cpu|cuda]

For each precision it prints the extraction pass's rate (images/s, the int8 calibration included; the best of
``--rounds`` passes, alternating the precisions), its features' relative error against fp32, and the NMI between
the k-means clustering of its pre-processed features (PCA-whitened, L2-normalised, as each epoch does) and fp32's
with the same k-means seed. Next to it, the NMI between fp32 clusterings of different k-means seeds: the noise the
method has anyway. A precision changes nothing the method can tell when its NMI to fp32 is at least that. With
labels, each clustering's NMI against them too.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from deepcluster.clustering import build_clustering
from deepcluster.device import extraction_dtype, int8_dot_products
from deepcluster.evaluate import nmi
from deepcluster.features import Reading, centre_view_features
from deepcluster.preprocess import PCAWhitening, l2_normalize
from deepcluster.session import open_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a trained run directory")
    ap.add_argument("--precisions", default="fp32,int8,bf16")
    ap.add_argument("--seeds", type=int, default=3, help="k-means seeds per precision")
    ap.add_argument("--rounds", type=int, default=2, help="extraction passes per precision, timed")
    ap.add_argument("--device", default="cpu", help="where the network runs: cpu (int8 is CPU-only) or cuda")
    a = ap.parse_args()
    run = open_run(a.run, device=a.device)
    cfg, model, data = run.cfg, run.model, run.train_set
    names = a.precisions.split(",")
    if names[0] != "fp32":
        raise SystemExit("--precisions must start with fp32 (the reference)")
    if "int8" in names and run.device.type != "cpu":
        raise SystemExit("int8 extraction runs on CPUs only: leave it out of --precisions on a GPU")
    print(f"{len(data)} images of {data.name}, arch {cfg.arch} at {model.image_size} px, k = {cfg.k}, "
          f"{torch.get_num_threads()} threads; int8 multiplied in hardware: {int8_dot_products()}", flush=True)

    feats, times = {}, {p: [] for p in names}
    for _ in range(a.rounds):
        for p in names:
            amp = extraction_dtype(replace(cfg, extract_precision=p, precision="fp32"), run.device, len(data))
            t = time.perf_counter()
            feats[p] = centre_view_features(model, data, run.device, Reading(cfg.batch_size, cfg.workers, amp, None))
            times[p].append(time.perf_counter() - t)

    def clusterings(f: np.ndarray) -> list[np.ndarray]:
        x = l2_normalize(PCAWhitening(cfg.pca_dim).fit_transform(f))
        return [build_clustering(cfg, s, "cpu").fit(x).labels_ for s in range(a.seeds)]

    ref = clusterings(feats["fp32"])
    noise = [nmi(ref[s], ref[(s + 1) % a.seeds]) for s in range(a.seeds)] if a.seeds > 1 else [float("nan")]
    print(f"k-means seed to seed, fp32: NMI {np.mean(noise):.4f} (min {min(noise):.4f})")
    print(f"{'precision':>9} {'images/s':>9} {'x fp32':>7} {'rel. error':>10} {'NMI to fp32':>12} "
          f"{'NMI labels':>10}")
    base = min(times["fp32"])
    for p in names:
        labels = ref if p == "fp32" else clusterings(feats[p])
        err = np.linalg.norm(feats[p] - feats["fp32"]) / np.linalg.norm(feats["fp32"])
        agree = [nmi(labels[s], ref[s]) for s in range(a.seeds)]
        truth = f"{statistics.mean(nmi(x, data.targets) for x in labels):10.4f}" if data.targets is not None else ""
        print(f"{p:>9} {len(data) / min(times[p]):9.0f} {base / min(times[p]):7.2f} {err:10.4f} "
              f"{np.mean(agree):12.4f} {truth}")


if __name__ == "__main__":
    main()
