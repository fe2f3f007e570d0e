"""Does training learn on folders the recipe was not tuned on? Per labelled folder and seed, side by side in one
run: ``deepcluster train --data FOLDER`` with the defaults (a user's first run; ``--`` passes a candidate's
options), scored by its own closing table, next to the baselines measured in that same run (the network at its
random initialisation, the pixels) and a non-learned descriptor pipeline of the kind practitioners use (grey
64 px HOG, PCA to 50 dimensions, k-means), all with k = the folder's number of groups (best of 10 k-means++
starts; labels only score). kNN: top-1 of a 20-neighbour cosine vote, each image left out of its own.

Columns: NMI of the trained fc features (L2, and as the run clusters them: PCA-whitened + L2), the best of the
random network's and the pixels' rows, HOG; accuracy of the trained L2 features; kNN of the trained network's best
layer (fc or the last conv), of the best baseline's, and of HOG; ``last-best``: NMI of the pseudo-labels against
the labels at the last epoch minus its best epoch's; ``rise``: how much the training loss grew over the last quarter
of the epochs, by a straight line fitted to it (> 0: it climbed back); the time of the whole command.

The goals (issue "learn on folders the recipe was never tuned on") are checked per folder on the mean over seeds:
from 1,000 images, trained NMI (L2) >= best baseline + 0.05 and trained kNN above the baselines'; below, trained
NMI >= best baseline - 0.02; no loss rising over the last quarter. ``TUNING`` folders may inform the recipe;
``HELD_OUT`` ones never do and are reported apart.

    .venv/bin/python benchmarks/learning.py ROOT [--folders NAME ...] [--seeds 0 1] [--tag NAME] [-- OPTIONS]

Folders come from ``benchmarks/folders.py`` (built under ``ROOT`` if missing); runs go to ``ROOT/runs/TAG/NAME-sS``
and a finished run is read, not trained again.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from folders import build, list_images, train_defaults  # noqa: E402

from deepcluster.evaluate.clustering import kmeans_quality  # noqa: E402
from deepcluster.evaluate.knn import knn_accuracy  # noqa: E402
from deepcluster.preprocess import PCAWhitening, l2_normalize  # noqa: E402

TUNING = ("emoji-3", "textures-6", "digits-10", "emoji-8", "glyphs-26")
HELD_OUT = ("glyphs-10", "emoji-40")


def scores(run: Path) -> dict:
    """What the run's closing table and curves say (see the module's docstring)."""
    ev = json.loads((run / "eval.json").read_text())
    rows = {(r["features"], r["preprocessing"]): r for r in ev["results"]}
    knn = {(r["features"], r["layer"]): r["top1"] for r in ev["knn"]["results"]}
    white = next(r for (f, p), r in rows.items() if f == "trained" and p.startswith("PCA-whitened"))
    curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in curve]
    quarter = np.array(loss[-max(3, len(loss) // 4):])
    # a trend, not one noisy epoch (none for a one-epoch run)
    slope = np.polyfit(np.arange(len(quarter)), quarter, 1)[0] if len(quarter) > 1 else 0.0
    labels = [r["nmi_labels"] for r in curve] or [0.0]  # --epochs 0: no curve
    return {"images": ev["images"], "k": ev["k"], "nmi": rows["trained", "L2"]["nmi"], "white": white["nmi"],
            "acc": rows["trained", "L2"]["acc"],
            "base": max(r["nmi"] for (f, _), r in rows.items() if f != "trained"),
            "knn": max(v for (f, _), v in knn.items() if f == "trained"),
            "knn_base": max(v for (f, _), v in knn.items() if f != "trained"),
            "last_best": labels[-1] - max(labels), "rise": float(slope * (len(quarter) - 1))}


@functools.lru_cache(maxsize=None)
def hog_pipeline(folder: Path) -> dict:
    """Grey 64 px HOG (9 orientations, 8 px cells, 2x2 blocks), PCA to 50 dims + L2, k-means with the true k; and
    the kNN top-1 of the HOG descriptors. Returns NMI, ACC and kNN."""
    from skimage.feature import hog

    files, y, _ = list_images(folder)
    x = np.stack([hog(np.asarray(Image.open(folder / f).convert("L").resize((64, 64), Image.Resampling.BILINEAR)),
                      orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for f in files])
    z = l2_normalize(PCAWhitening(50, whiten=False).fit_transform(x.astype(np.float32)))
    q = kmeans_quality(z, y, seeds=1)
    return {"nmi": q["nmi"], "acc": q["acc"], "knn": knn_accuracy(x.astype(np.float32), y)}


def goals(m: dict) -> list[str]:
    """The goals a folder's mean scores miss (empty: all met)."""
    miss = []
    best = max(m["base"], m["hog"])
    if m["images"] >= 1000:
        if m["nmi"] < m["base"] + 0.05:
            miss.append(f"NMI {m['nmi']:.3f} < baseline {m['base']:.3f} + 0.05")
        if m["knn"] <= m["knn_base"]:
            miss.append(f"kNN {m['knn']:.3f} <= baseline {m['knn_base']:.3f}")
    elif m["nmi"] < best - 0.02:
        miss.append(f"NMI {m['nmi']:.3f} < best baseline {best:.3f} - 0.02")
    if m["rise"] > 0.05:
        miss.append(f"loss rose by {m['rise']:.2f} over the last quarter")
    return miss


def main() -> None:
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--folders", nargs="+", default=list(TUNING + HELD_OUT))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tag", default="defaults", help="runs go to ROOT/runs/TAG (one tag per candidate)")
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    cols = ("nmi", "white", "base", "hog", "acc", "knn", "knn_base", "hog_knn", "last_best", "rise", "seconds")
    print(f"candidate {a.tag}: defaults {' '.join(options)}; mean ± spread (max - min) over seeds {a.seeds}")
    print(f"| folder | images | K | {' | '.join(cols)} | goals |")
    print("|---|" + "---:|" * (len(cols) + 2) + "---|")
    for group, names in (("tuning", [f for f in a.folders if f not in HELD_OUT]),
                         ("held out", [f for f in a.folders if f in HELD_OUT])):
        for name in names:
            folder = build(name, a.root)
            runs = []
            for seed in a.seeds:
                out = a.root / "runs" / a.tag / f"{name}-s{seed}"
                seconds = train_defaults(folder, out, seed, options)
                runs.append({**scores(out), "seconds": seconds})
            hog = hog_pipeline(folder)
            m = {c: float(np.mean([r[c] for r in runs])) for c in runs[0]}
            m.update(hog=hog["nmi"], hog_knn=hog["knn"])
            spread = {c: max(r[c] for r in runs) - min(r[c] for r in runs) for c in runs[0]}
            cells = [f"{m[c]:.3f}" + (f" ± {spread[c]:.3f}" if c in ("nmi", "knn") and len(runs) > 1 else "")
                     if c != "seconds" else f"{m[c]:.0f} s" for c in cols]
            miss = goals(m)
            print(f"| {name} ({group}) | {int(m['images'])} | {int(m['k'])} | {' | '.join(cells)} | "
                  f"{'met' if not miss else '; '.join(miss)} |", flush=True)


if __name__ == "__main__":
    main()
