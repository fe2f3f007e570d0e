"""How well the groups drawn from a finished run match the kinds in labelled folders, and how well ``--clusters
auto`` estimates their number: per folder and seed, side by side in one run,

- ``train``: the training's own clustering (the recipe's k);
- ``tree@K`` / ``km@K``: the tree cut at the true number of kinds K, and k-means at K on the same final features,
  with ``agree``, the NMI between the two;
- for each criterion of ``--clusters auto``: the K it chose and the NMI of its groups (k-means at that K, what
  ``export --clusters auto`` writes);
- ``peer``: clustimage (grey HOG, PCA, Ward, K by silhouette over 2-60) on the folder's files (``--peer``).

The folders come from ``benchmarks/folders.py`` (3 to 50 kinds, Fashion-MNIST, digits, photo crops, textures,
faces, mixtures). They are split in two: the criterion the package uses by default (``CRITERION`` in
``deepcluster/export/groups.py``) was chosen on the ``TUNING`` folders only; the ``HELD_OUT`` ones judge it.
Each run is ``deepcluster train --data FOLDER`` with the defaults (the user's first run), ``--seed S``; finished
runs under ``OUT_ROOT/runs`` are reused.

    .venv/bin/python benchmarks/groups.py OUT_ROOT [--seeds 0 1] [--folders NAME ...] [--peer]

``--demo runs/fashion-mnist`` instead times ``export --clusters`` on a copy of the demo run (60,000 images): at the
training's k, at 30, ``auto``, the tree cut at 30, and checks the first against the training's clustering.

The summary counts, per criterion, the folders (mean over seeds) where auto's NMI is within 0.03 of the true-K
tree cut's, and names the misses.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score as nmi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from folders import build, list_images, peer_pipeline, train_defaults  # noqa: E402

from deepcluster.clustering.number import CRITERIA, choose_k  # noqa: E402
from deepcluster.export.groups import CRITERION, RunGroups  # noqa: E402
from deepcluster.export.table import run_clustering  # noqa: E402
from deepcluster.session import open_run  # noqa: E402

TUNING = ("fmnist-3", "digits-10", "photos-5", "mixed-20")
HELD_OUT = ("fmnist-5", "textures-6", "photos-26", "fmnist-10-small", "mixed-50")
MARGIN = 0.03


def evaluate(run_dir: Path) -> dict:
    """Every grouping of one finished run scored against the folder's subfolders (the dataset's targets)."""
    run = open_run(run_dir, device="cpu")
    y = np.asarray(run.train_set.targets)
    k_true = len(run.train_set.classes)
    g = RunGroups(run_dir, run_clustering(run), run.cfg.k, run.cfg.seed)
    tree = g.tree()
    cut, km = tree.labels(k_true), g.kmeans(k_true)[0]
    row = {"K": k_true, "n": g.n, "leaves": tree.leaves, "train": nmi(y, g.clustering.labels[0]),
           "tree@K": nmi(y, cut), "km@K": nmi(y, km), "agree": nmi(cut, km)}
    for c in CRITERIA:
        start = time.perf_counter()
        choice = choose_k(g.features, tree.leaf_of, tree.z, tree.sizes, c, run.cfg.seed)
        row[c] = {"k": choice.k, "low": choice.low, "high": choice.high, "flat": choice.flat,
                  "nmi": nmi(y, g.kmeans(choice.k)[0]), "seconds": time.perf_counter() - start}
    return row


def demo(run_dir: Path, scratch: Path) -> None:
    """The whole commands a user waits for on a finished run (the demo's: 60,000 images), on a copy of it with
    nothing kept in ``groups/``: ``export --clusters`` at the training's k, at 30, ``auto``, and the tree cut at
    30; then whether the first equals the training's clustering and how the tree's cuts and k-means agree."""
    import shutil

    copy = scratch / "run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("groups", "clusters-*", "report", "tensorboard"))
    run = open_run(copy, device="cpu")
    k = run.cfg.k
    print(f"{copy}: {len(run.state.clustering.labels[0]):,} images, trained with k = {k}")
    for args, note in (([str(k)], ""), (["30"], ""), (["auto"], "(the tree and the curve)"),
                       (["30", "--grouping", "tree"], ""), (["30"], "(again: read back)")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "deepcluster", "export", str(copy), "--clusters", *args,
                        "--overwrite"], check=True, stdout=subprocess.DEVNULL)
        print(f"  export --clusters {' '.join(args):<16} {time.perf_counter() - start:6.1f} s {note}", flush=True)
    table = lambda name: np.loadtxt(copy / name, delimiter=",", skiprows=1, usecols=1, dtype=np.int64)
    print(f"  --clusters {k} equals the training's clustering: "
          f"{np.array_equal(table(f'clusters-k{k}.csv'), np.load(copy / 'assignments.npy'))}")
    g = RunGroups(copy, run_clustering(run), k, run.cfg.seed)
    y = None if run.train_set.targets is None else np.asarray(run.train_set.targets)
    for kk in (k, 30):
        cut, km = g.tree().labels(kk), g.kmeans(kk)[0]
        line = f"  K = {kk}: NMI(tree cut, k-means) {nmi(cut, km):.3f}"
        if y is not None:
            line += f"; against the labels: tree cut {nmi(y, cut):.3f}, k-means {nmi(y, km):.3f}"
        print(line)
    c = g.choice()
    print(f"  auto: {c.describe()}" + ("" if y is None else f"; NMI against the labels "
                                         f"{nmi(y, g.kmeans(c.k)[0]):.3f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_root", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--folders", nargs="+", default=list(TUNING + HELD_OUT))
    ap.add_argument("--peer", action="store_true", help="also run clustimage on each folder")
    ap.add_argument("--train-args", default="", help="more options for deepcluster train, e.g. '--epochs 5'")
    ap.add_argument("--demo", type=Path, metavar="RUN_DIR", help="time the commands on a copy of this finished "
                    "run (the demo's: runs/fashion-mnist) in OUT_ROOT instead")
    a = ap.parse_args()
    if a.demo:
        return demo(a.demo, a.out_root)
    rows = {}
    head = f"{'folder':<16} {'seed':>4} {'K':>3} {'train':>6} {'tree@K':>6} {'km@K':>6} {'agree':>6}"
    head += "".join(f"  {c[:10]:>10} k" for c in CRITERIA) + "  peer k"
    print(head, flush=True)
    for name in a.folders:
        folder = build(name, a.out_root / "folders")
        peer = None
        if a.peer:  # the peer is deterministic: its result on a folder is kept
            kept = a.out_root / f"peer-{name}.json"
            if not kept.is_file():
                r = peer_pipeline(folder)
                kept.write_text(json.dumps([r["k"], nmi(list_images(folder)[1], r["labels"]), r["seconds"]]))
            peer = tuple(json.loads(kept.read_text())[:2])
        for seed in a.seeds:
            run_dir = a.out_root / "runs" / f"{name}-s{seed}"
            seconds = train_defaults(folder, run_dir, seed, a.train_args.split())
            row = rows[name, seed] = {**evaluate(run_dir), "train_s": seconds, "peer": peer}
            line = f"{name:<16} {seed:>4} {row['K']:>3} " + " ".join(
                f"{row[m]:>6.3f}" for m in ("train", "tree@K", "km@K", "agree"))
            line += "".join(f"  {row[c]['nmi']:>6.3f} {row[c]['k']:>3}" for c in CRITERIA)
            line += f"  {peer[1]:.3f} {peer[0]:>2}" if peer else "      -"
            print(line, flush=True)
    (a.out_root / "groups.json").write_text(json.dumps({f"{n}-s{s}": r for (n, s), r in rows.items()}, indent=1))

    print(f"\nauto within {MARGIN} of the true-K tree cut (NMI, mean over seeds {a.seeds}); default: {CRITERION}")
    for split, names in (("tuning", TUNING), ("held out", HELD_OUT)):
        names = [n for n in names if n in a.folders]
        if not names:
            continue
        for c in list(CRITERIA) + (["peer"] if a.peer else []):
            gaps, misses = [], []
            for n in names:
                seeds = [rows[n, s] for s in a.seeds]
                got = np.mean([r["peer"][1] if c == "peer" else r[c]["nmi"] for r in seeds])
                gap = got - np.mean([r["tree@K"] for r in seeds])
                gaps.append(gap)
                if gap < -MARGIN:
                    misses.append(f"{n} ({gap:+.3f})")
            print(f"  {split:<8} {c:<10} {sum(g >= -MARGIN for g in gaps)}/{len(names)}  mean gap "
                  f"{np.mean(gaps):+.3f}  misses: {', '.join(misses) or 'none'}")


if __name__ == "__main__":
    main()
