"""How many dimensions the clustering input may whiten, measured where the training's first clustering happens:
on the random network's fc features (the network epoch 1 clusters), for labelled folders of 150 to 6,500 images.

Per folder and seed, side by side: k-means with k = the true number of groups (best of 10 starts) on the features
L2-normalised, PCA-whitened to ``d`` dimensions then L2-normalised, for ``d`` = ``min(256, N - 1)`` (the paper's
256, capped only by the rank) and for ``d`` = N / r for a few ratios r, and plain PCA (not whitened) to 256 + L2.
Scored by NMI against the folders' subfolders (labels used only to score). The network is the recipe's for the
folder, in float32, seeded by ``--seed``.

    .venv/bin/python benchmarks/whitening.py ROOT [NAME ...] [--seeds 0 1]

``ROOT`` holds folders built by ``benchmarks/folders.py`` (built there if missing).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from folders import FOLDERS, build  # noqa: E402

from deepcluster import Config, recipe  # noqa: E402
from deepcluster.evaluate.clustering import kmeans_quality  # noqa: E402
from deepcluster.features import Reading, centre_view_features  # noqa: E402
from deepcluster.preprocess import PCAWhitening, l2_normalize  # noqa: E402
from deepcluster.session import (  # noqa: E402
    datasets,
    fresh_network,  # noqa: E402
    training_images,
)

RATIOS = (4, 10, 25, 50, 100)


def random_features(folder: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fc features ``(N, D)`` of the recipe's network for ``folder`` at its seeded random initialisation, and the
    labels."""
    cfg = Config(data=str(folder), seed=seed, device="cpu", extract_precision="fp32", report=False)
    train = training_images(cfg)
    cfg = recipe.resolve(cfg, recipe.profile(train))
    train, _ = datasets(cfg, train=train)
    model = fresh_network(cfg, train.channels, torch.device("cpu"))
    f = centre_view_features(model, train, torch.device("cpu"), Reading(cfg.batch_size, 0, desc=None))
    return f, np.asarray(train.targets)


def inputs(f: np.ndarray) -> dict[str, np.ndarray]:
    n = len(f)
    out = {"L2": l2_normalize(f),  # "white 256": at most N - 1, the rank
            "white 256": l2_normalize(PCAWhitening(256).fit_transform(f))}
    for r in RATIOS:
        d = max(2, min(256, n // r))
        out.setdefault(f"white N/{r}", l2_normalize(PCAWhitening(d).fit_transform(f)))
    out["PCA 256"] = l2_normalize(PCAWhitening(256, whiten=False).fit_transform(f))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("names", nargs="*", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()
    names = a.names or list(FOLDERS)
    rows: dict[tuple[str, str], list[float]] = {}
    for name in names:
        folder = build(name, a.root)
        for seed in a.seeds:
            f, y = random_features(folder, seed)
            for key, x in inputs(f).items():
                rows.setdefault((name, key), []).append(
                    kmeans_quality(x, y, seeds=1, seed=seed)["nmi"])
        keys = [k for (n, k) in rows if n == name]
        print(f"{name} ({len(f)} images, {len(np.unique(y))} groups): " + ", ".join(
            f"{k} {np.mean(rows[name, k]):.3f}±{np.std(rows[name, k]):.3f}" for k in keys), flush=True)
    keys = list(dict.fromkeys(k for _, k in rows))
    print("mean over folders: " + ", ".join(f"{k} {np.mean([np.mean(rows[n, k]) for n in names]):.3f}"
                                             for k in keys))


if __name__ == "__main__":
    main()
