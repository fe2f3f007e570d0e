"""Duplicate search on real folders with planted copies: how many it finds, and how many other pairs.

The folder is scripts/photo_folder.py's 800 colour photographs (``--data photos``: overlapping crops of ten
pictures, 40-160 px, the hard case) or 5,000 Fashion-MNIST training images written as PNG files (``--data
fashion-mnist``: many look-alike garments). For 40 images, drawn at random, two copies are planted beside the
original: the same file under another name, and a near copy (resized to 90 %, re-encoded as JPEG at quality 80).
DeepCluster trains on the folder with the defaults, then ``deepcluster duplicates`` runs with its defaults, and a
sweep of kinds, thresholds and probes reads the same signatures and features once. A planted triple is found when
one group holds all three images; an other pair is a pair found that is not inside a planted triple.

    .venv/bin/python benchmarks/duplicates.py [--data photos|fashion-mnist] [--work DIR]
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
from deepcluster.export.duplicates import compared_pairs, copy_pairs, copy_signatures, duplicate_groups, similar_pairs
from deepcluster.export.table import image_names
from deepcluster.features import Reading, centre_view_features
from deepcluster.session import Images, open_run
from deepcluster.space import embed, nearest_clusters

ROOT = Path(__file__).resolve().parents[1]


def plant(images: Path, n: int, seed: int = 0) -> None:
    files = sorted(p for p in images.rglob("*") if p.is_file())
    for src in np.random.default_rng(seed).choice(files, n, replace=False):
        src = Path(src)
        exact = src.with_name(f"dup-exact-{src.stem}{src.suffix}")
        shutil.copy(src, exact)
        near = src.with_name(f"dup-near-{src.stem}.jpg")
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.resize((max(8, round(im.width * 0.9)), max(8, round(im.height * 0.9)))).save(near, quality=80)


def planted_triples(images: Path) -> list[set[str]]:
    """The planted triples, found again by their names (so that a run in --work can be scored again)."""
    triples = []
    for exact in sorted(images.rglob("dup-exact-*")):
        stem = exact.stem[len("dup-exact-"):]
        src = next(p for p in exact.parent.iterdir() if p.stem == stem)
        triples.append({str(p.relative_to(images)) for p in (src, exact, exact.with_name(f"dup-near-{stem}.jpg"))})
    return triples


def score(pairs: list[tuple[str, str]], names: list[str], triples: list[set[str]]) -> tuple[int, int]:
    index = {name: i for i, name in enumerate(names)}
    i = np.array([index[a] for a, _ in pairs], dtype=np.int64)
    j = np.array([index[b] for _, b in pairs], dtype=np.int64)
    groups = duplicate_groups(len(names), i, j)
    found = sum(len({groups[index[m]] for m in t}) == 1 and groups[index[next(iter(t))]] >= 0 for t in triples)
    false = sum(not any(a in t and b in t for t in triples) for a, b in pairs)
    return found, false


def write_folder(kind: str, images: Path) -> None:
    if kind == "photos":
        subprocess.run([sys.executable, str(ROOT / "scripts" / "photo_folder.py"), str(images)], check=True)
        return
    from deepcluster.data.fashion_mnist import fashion_mnist

    ds = fashion_mnist("train")
    for i in range(5000):
        d = images / ds.classes[int(ds.targets[i])].replace("/", "-")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.images[i, 0].numpy()).save(d / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="photos", choices=("photos", "fashion-mnist"))
    ap.add_argument("--planted", type=int, default=40)
    ap.add_argument("--work", help="folder for the images and the run (default: a temporary one, removed)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="deepcluster-dup-bench-"))
    images, run = work / "images", work / "run"
    try:
        if not images.exists():
            write_folder(args.data, images)
            plant(images, args.planted)
        triples = planted_triples(images)
        t = time.perf_counter()
        if not (run / "checkpoint.pt").exists():
            assert cli(["train", "--data", str(images), "--no-report", "--device", "cpu", "--out", str(run)]) == 0
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        assert cli(["duplicates", str(run), "--device", "cpu", "--overwrite"]) == 0
        t_dup = time.perf_counter() - t
        with open(run / "duplicates.csv", newline="") as f:
            pairs = [(r["image_a"], r["image_b"]) for r in csv.DictReader(f)]
        r = open_run(run, device="cpu", images=Images(whole=False, cache=False))
        names = [str(n) for n in image_names(r.train_set)]
        found, false = score(pairs, names, triples)
        print(f"\n{len(names)} images ({args.data}), {len(triples)} planted triples (exact copy + resized JPEG "
              f"copy); training {t_train:.0f} s, duplicates {t_dup:.1f} s")
        print(f"deepcluster duplicates (defaults): {found} of {len(triples)} triples found, {false} other pairs, "
              f"{len(pairs)} pairs in all")
        c, labels = r.state.clustering, r.state.clustering.labels[0]
        x = embed(r.model, r.train_set, c, r.device, Reading(r.cfg.batch_size, desc=None))
        probes = nearest_clusters(x, c.centroids[0], 2)
        sig, means, aspects = copy_signatures(r.train_set)
        spaces = {"copies": None, "features: clustering": x,
                  "features: fc": centre_view_features(r.model, r.train_set, r.device, Reading(r.cfg.batch_size))}
        print("\n| by | threshold | probe | pairs compared | triples found | other pairs |")
        print("|---|---|---|---|---|---|")
        for space, feats in spaces.items():
            for thr in (0.95, 0.97, 0.98, 0.99) if feats is None else (0.9, 0.95, 0.99):
                for probe in (1, 2):
                    p = None if probe == 1 else probes
                    i, j, _ = copy_pairs(sig, means, aspects, labels, thr, p) if feats is None else \
                        similar_pairs(feats, labels, thr, p)
                    found, false = score([(names[a], names[b]) for a, b in zip(i, j)], names, triples)
                    print(f"| {space} | {thr} | {probe} | {compared_pairs(labels, p):,} | {found} / {len(triples)} "
                          f"| {false} |")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
