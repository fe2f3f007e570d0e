"""Near-duplicate search on a real folder with planted duplicates: how many it finds, and how many other pairs.

The folder is scripts/photo_folder.py's 800 colour photographs. For 40 of them, drawn at random, two copies are
planted beside the original: the same file under another name, and a near copy (resized to 90 %, re-encoded as
JPEG at quality 80). DeepCluster trains on the folder with the defaults, then ``deepcluster duplicates`` runs at
``--threshold``, and a sweep of thresholds in both feature spaces reads the same features once. A planted triple
is found when one group holds all three images; a false pair is a pair found that is not inside a planted triple.

    .venv/bin/python benchmarks/duplicates.py [--threshold 0.9] [--work DIR]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepcluster.cli import main as cli
from deepcluster.clusters import embed
from deepcluster.export.duplicates import duplicate_groups, similar_pairs
from deepcluster.export.table import image_names
from deepcluster.features import centre_view_features
from deepcluster.session import open_run

ROOT = Path(__file__).resolve().parents[1]


def plant(images: Path, n: int, seed: int = 0) -> list[set[str]]:
    files = sorted(p for p in images.rglob("*") if p.is_file())
    triples = []
    for src in np.random.default_rng(seed).choice(files, n, replace=False):
        src = Path(src)
        exact = src.with_name(f"dup-exact-{src.stem}{src.suffix}")
        shutil.copy(src, exact)
        near = src.with_name(f"dup-near-{src.stem}.jpg")
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.resize((max(8, round(im.width * 0.9)), max(8, round(im.height * 0.9)))).save(near, quality=80)
        triples.append({str(p.relative_to(images)) for p in (src, exact, near)})
    return triples


def score(pairs: list[tuple[str, str]], names: list[str], triples: list[set[str]]) -> tuple[int, int]:
    index = {name: i for i, name in enumerate(names)}
    i = np.array([index[a] for a, _ in pairs], dtype=np.int64)
    j = np.array([index[b] for _, b in pairs], dtype=np.int64)
    groups = duplicate_groups(len(names), i, j)
    found = sum(len({groups[index[m]] for m in t}) == 1 and groups[index[next(iter(t))]] >= 0 for t in triples)
    false = sum(not any(a in t and b in t for t in triples) for a, b in pairs)
    return found, false


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--planted", type=int, default=40)
    ap.add_argument("--work", help="folder for the images and the run (default: a temporary one, removed)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="deepcluster-dup-bench-"))
    images, run = work / "images", work / "run"
    try:
        if not images.exists():
            subprocess.run([sys.executable, str(ROOT / "scripts" / "photo_folder.py"), str(images)], check=True)
        triples = plant(images, args.planted)
        t = time.perf_counter()
        assert cli(["train", "--data", str(images), "--no-report", "--device", "cpu", "--out", str(run)]) == 0
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        assert cli(["duplicates", str(run), "--threshold", str(args.threshold), "--device", "cpu"]) == 0
        t_dup = time.perf_counter() - t
        with open(run / "duplicates.csv", newline="") as f:
            pairs = [(r["image_a"], r["image_b"]) for r in csv.DictReader(f)]
        r = open_run(run, device="cpu", whole_data=False, cache=False)
        names = [str(n) for n in image_names(r.train_set)]
        found, false = score(pairs, names, triples)
        print(f"\n{len(names)} images, {len(triples)} planted triples (exact copy + resized JPEG copy); training "
              f"{t_train:.0f} s, duplicates {t_dup:.1f} s")
        print(f"deepcluster duplicates --threshold {args.threshold}: {found} of {len(triples)} triples found, "
              f"{false} other pairs, {len(pairs)} pairs in all")
        c, labels = r.state.clustering, r.state.clustering.labels[0]
        spaces = {"fc": centre_view_features(r.model, r.train_set, r.device, r.cfg.batch_size, desc=None),
                  "clustering": embed(r.model, r.train_set, c, r.device, r.cfg.batch_size)}
        print("\n| space | threshold | triples found | other pairs |")
        print("|---|---|---|---|")
        for space, x in spaces.items():
            for thr in (0.9, 0.95, 0.97, 0.99):
                i, j, _ = similar_pairs(x, labels, thr)
                found, false = score([(names[a], names[b]) for a, b in zip(i, j)], names, triples)
                print(f"| {space} | {thr} | {found} / {len(triples)} | {false} |")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
