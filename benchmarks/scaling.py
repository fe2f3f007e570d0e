"""The scaling study of docs/scaling.md: what clustering costs as N and k grow, the clustering stage's peak
memory, and the network passes an ImageNet epoch is made of.

    .venv/bin/python benchmarks/scaling.py kmeans  [--sizes 10000,100000,1000000] [--ks 100,1000,10000]
    .venv/bin/python benchmarks/scaling.py memory  [--n 1000000] [--dim 4096] [--k 1000]
    .venv/bin/python benchmarks/scaling.py network [--arch alexnet] [--size 224] [--batch 128]
    .venv/bin/python benchmarks/scaling.py loading [--images 2000] [--workers 0,2]

``kmeans``: our KMeans (faiss CPU here; ``--backend torch`` on a GPU machine) on synthetic L2-normalised
256-d features. Cells whose 20 iterations would take minutes run 1 or 2 iterations; the time of one iteration is
then the measured time / (iterations + 1) (each iteration assigns every point; the fit adds one final
assignment), and the 20-iteration figure is 21 x that, as printed.

``memory``: the clustering stage exactly as training runs it (``clustering_input``: PCA fitted on
``pca_sample`` images, every other image projected as it is extracted; then k-means, pseudo-labels and the
epoch's sample list) on N synthetic images whose "network" maps 8x8 pixels to ``--dim`` features. Prints the
peak resident memory above the process's baseline (imports + images) for the extraction + PCA phase and for the
clustering phase, next to N x 256 x 4 bytes and to the N x D x 4 bytes that keeping all features would cost.

``network``: images/s of the extraction pass (eval, inference mode) and of the training step (SGD) of
``--arch`` at ``--size`` px, channels-last, in the config's precision (``--precision``).

``loading``: the data pipeline alone on ImageNet-like files (JPEG, 500 x 375, quality 90, written to a temporary
folder): the folder scan (each file's header checked once per start), ``deepcluster prepare`` of the folder, and
images/s of the loader over the raw folder (decode, resize to 256, centre square) and over the prepared one, side
by side for each number of worker processes, batches of 256; and the prepared folder with its JPEGs decoded in
batches on ``--device`` (nvJPEG on a GPU: the workers only slice the shards), the images delivered there.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def synthetic_features(n: int, d: int = 256, centres: int = 1000, seed: int = 0) -> np.ndarray:
    """``(n, d)`` L2-normalised points around ``centres`` random directions: what whitened features look like."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d), dtype=np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):  # in chunks: no second N x d temporary
        m = min(65536, n - s)
        x[s:s + m] = c[rng.integers(centres, size=m)] + 0.7 * rng.standard_normal((m, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_kmeans(args) -> None:
    from deepcluster.clustering import KMeans

    print(f"k-means, d = 256, {torch.get_num_threads()} threads, backend {args.backend}")
    print("|         N |      k | iterations run | time (s) | s / iteration | 20 iterations (s) | GFLOP/s |")
    print("|----------:|-------:|---------------:|---------:|--------------:|------------------:|--------:|")
    for n in (int(v) for v in args.sizes.split(",")):
        x = synthetic_features(n)
        for k in (int(v) for v in args.ks.split(",")):
            if k > n:
                continue
            work = n * k
            iters = 20 if work <= args.full_below else (2 if work <= 10 * args.full_below else 1)
            t = time.perf_counter()
            km = KMeans(k, iters, seed=0, backend=args.backend).fit(x)
            t = time.perf_counter() - t
            per = t / (km.n_iter_ + 1)
            flops = 2 * n * k * x.shape[1] / per  # one assignment: an (N, d) x (d, k) product
            print(f"| {n:>9,} | {k:>6,} | {km.n_iter_:>14} | {t:>8.2f} | {per:>13.3f} | {21 * per:>17.1f} | "
                  f"{flops / 1e9:>7.0f} |", flush=True)
        del x


class SyntheticNet(nn.Module):
    """Stands in for the network in the memory benchmark: ``(B, 1, 8, 8)`` images -> ``(B, dim)`` non-negative
    features of rank 64, cheap to compute, so that the benchmark measures the pipeline around the network."""

    image_size = 8

    def __init__(self, dim: int):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, dim)

    def inference_embed(self):
        return self.embed

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(torch.tanh(self.a(x.flatten(1)))))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak resident set size (VmHWM)
        f.write("5")


def _status(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def bench_memory(args) -> None:
    from deepcluster import Config, TensorImages
    from deepcluster.clustering import build_clustering
    from deepcluster.features import Reading
    from deepcluster.sampler import pseudo_labels, uniform_over_clusters
    from deepcluster.space import Fitting, clustering_input

    n, gb = args.n, 1e9
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8))
    data = TensorImages(images, name="synthetic")
    device = torch.device(args.device)
    cfg = Config(data="synthetic", image_size=8, batch_size=1024, k=args.k, kmeans_iters=args.iters,
                 pca_dim=256, pca_sample=args.pca_sample, precision="fp32", device=device.type)
    torch.manual_seed(0)
    model = SyntheticNet(args.dim).to(device)
    import faiss  # noqa: F401 - loaded before the baseline: the library itself is not the stage's memory

    base = _status("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    _, x = clustering_input(model, data, device, Reading(cfg.batch_size, cfg.workers, desc=None),
                            Fitting("whitened", np.random.default_rng(0), cfg.pca_dim, cfg.pca_sample))
    t_feat, peak_feat = time.perf_counter() - t, _status("VmHWM") - base
    held = _status("VmRSS") - base  # x, and whatever the allocator kept of the phase before
    _reset_peak()
    t = time.perf_counter()
    clus = build_clustering(cfg, 0, device.type).fit(x)
    labels, c = pseudo_labels(clus.labels_)
    sample = uniform_over_clusters(labels, n, np.random.default_rng(0))
    t_clus, peak_clus = time.perf_counter() - t, _status("VmHWM") - base
    assert x.shape == (n, 256) and len(sample) == n
    print(f"N = {n:,} images, features D = {args.dim}, PCA fitted on {min(n, args.pca_sample):,} of them, "
          f"k = {args.k}, {args.iters} k-means iterations, {torch.get_num_threads()} threads, on {device}")
    print(f"  baseline (imports + images)          {base / gb:6.2f} GB")
    print(f"  N x 256 x 4 bytes (the whitened set)  {n * 256 * 4 / gb:6.2f} GB")
    print(f"  N x D x 4 bytes (all raw features)    {n * args.dim * 4 / gb:6.2f} GB")
    print(f"  peak above baseline, extraction + PCA {peak_feat / gb:6.2f} GB  ({t_feat:.0f} s)")
    print(f"  held after extraction + PCA           {held / gb:6.2f} GB")
    print(f"  peak above baseline, clustering       {peak_clus / gb:6.2f} GB  ({t_clus:.0f} s)"
          f" = {peak_clus / (n * 256 * 4):.2f} x N x 256 x 4 bytes")
    print(f"  (ru_maxrss of the whole process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)")
    if device.type == "cuda":
        print(f"  GPU memory, peak allocated: {torch.cuda.max_memory_allocated() / gb:.2f} GB")


def bench_network(args) -> None:
    from deepcluster.device import amp_dtype, autocast, bf16_products, int8_dot_products
    from deepcluster.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    amp = amp_dtype(args.precision, device)
    torch.manual_seed(0)
    model = build_model(args.arch, 3, args.size, sobel=True).to(device, memory_format=torch.channels_last)
    model.reset_head(args.classes)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(args.classes, (args.batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def extract():
        with torch.inference_mode(), autocast(device, amp):
            model.eval()
            model.embed(x)

    def step():
        model.train()
        with autocast(device, amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def rate(fn, steps: int) -> float:
        for _ in range(2):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * args.batch / (time.perf_counter() - t)

    e, s = rate(extract, args.steps), rate(step, args.steps)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch} + sobel at {args.size} px, batch {args.batch}, precision {args.precision} "
          f"({amp or 'fp32'}), {name}")
    print(f"  extraction {e:,.0f} images/s   training {s:,.0f} images/s")
    n = 1_281_167
    print(f"  ImageNet's {n:,} images: extraction {n / e / 60:.1f} min + training {n / s / 60:.1f} min per epoch "
          f"on this device (clustering and data loading not counted)")
    if device.type == "cpu":  # the extraction pass as the epochs run it: BatchNorm folded, fp32 against int8
        from deepcluster.models.quantized import int8_embed

        folded = model.eval().inference_embed()
        int8_embed(model, x[:8])  # FX's first trace pays its imports: not a quantisation's cost
        quantised, took = {}, {}
        for fc in (True, False):  # the whole network, and the conv layers alone (the fc block in fp32)
            t = time.perf_counter()
            quantised[fc] = int8_embed(model, x[:64], quantise_fc=fc)
            took[fc] = time.perf_counter() - t
        with torch.inference_mode():
            f32 = rate(lambda: folded(x), args.steps)
            i8 = {fc: rate(lambda q=q: q(x), args.steps) for fc, q in quantised.items()}
            with autocast(device, torch.bfloat16):
                b16 = rate(lambda: folded(x), args.steps)
        print(f"  extraction, BatchNorm folded: fp32 {f32:,.0f} images/s, int8 {i8[True]:,.0f} images/s "
              f"({i8[True] / f32:.1f}x; int8 multiplied in hardware: {int8_dot_products()}), quantising took "
              f"{took[True]:.1f} s")
        print(f"  bf16 autocast, BatchNorm folded: {b16:,.0f} images/s ({b16 / f32:.1f}x fp32; bf16 multiplied in "
              f"hardware, AMX or AVX-512 BF16: {bf16_products()}), nothing to quantise")
        gain = 1 / i8[False] - 1 / i8[True]  # seconds an image the int8 fc block saves
        print(f"  int8 with the fc block in fp32: {i8[False]:,.0f} images/s ({i8[False] / f32:.1f}x), quantising "
              f"took {took[False]:.1f} s; the int8 fc block pays its {took[True] - took[False]:.1f} s of packing "
              f"back from {(took[True] - took[False]) / gain:,.0f} images" if gain > 0 else
              f"  int8 with the fc block in fp32: {i8[False]:,.0f} images/s, quantising took {took[False]:.1f} s")


def bench_loading(args) -> None:
    import tempfile
    from pathlib import Path

    from perf import photo_folder  # the same photo-like JPEGs as the AlexNet setup of benchmarks/perf.py

    from deepcluster.data import ImageFolder, PreparedImages, make_loader, prepare

    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")

    def rate(data, w: int, on: torch.device | None = None) -> float:
        t = time.perf_counter()
        n = sum(len(idx) for _, idx in make_loader(data, range(len(data)), 256, w, device=on))
        if on is not None and on.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as out:
        photos = photo_folder(Path(args.keep or tmp), args.images)
        t = time.perf_counter()
        data = ImageFolder(photos, 256)
        scan = (time.perf_counter() - t) / len(data)
        print(f"{len(data)} JPEG files of 500 x 375: folder scan {scan * 1e3:.2f} ms per file "
              f"({scan * 1_281_167 / 60:.1f} min for ImageNet's 1.28M files)")
        t = time.perf_counter()
        done = prepare(photos, Path(out) / "prepared", 224, progress=False)
        print(f"  deepcluster prepare: {time.perf_counter() - t:.1f} s ({done['bytes'] / len(data) / 1e3:.1f} KB "
              f"per image at 256 px)")
        prepared = PreparedImages(Path(out) / "prepared")
        on_device = PreparedImages(Path(out) / "prepared")
        on_device.decoding = "device"
        rate(on_device, 0, device)  # nvJPEG's start-up, once per process
        # imports (PIL; torchvision's JPEG decoder, 1-2 s) are paid once per process, not timed
        diff = np.mean([(prepared[i][0].float() - data[i][0].float()).abs().mean().item() for i in range(200)])
        print(f"  prepared images against the raw folder's: {diff:.2f} grey levels apart on average (200 images)")
        print(f"| workers | raw folder (images/s) | prepared folder (images/s) | prepared / raw | prepared, decoded "
              f"on {device.type} (images/s) | on {device.type} / raw |")
        print("|---:|---:|---:|---:|---:|---:|")
        for w in (int(v) for v in args.workers.split(",")):
            r, p, d = rate(data, w), rate(prepared, w), rate(on_device, w, device)  # side by side, one by one
            print(f"| {w} | {r:,.0f} | {p:,.0f} | {p / r:.1f} | {d:,.0f} | {d / r:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kmeans")
    k.add_argument("--sizes", default="10000,100000,1000000")
    k.add_argument("--ks", default="100,1000,10000")
    k.add_argument("--backend", default="auto", choices=("auto", "faiss", "torch"))
    k.add_argument("--full-below", type=float, default=2e8,
                   help="N x k below which all 20 iterations run (else 2, or 1 above 10x this)")
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, default=1_000_000)
    m.add_argument("--dim", type=int, default=4096, help="feature dimension (AlexNet's fc: 4096)")
    m.add_argument("--k", type=int, default=1000)
    m.add_argument("--iters", type=int, default=2, help="k-means iterations (memory does not depend on them)")
    m.add_argument("--pca-sample", type=int, default=65536)
    m.add_argument("--device", default="cpu", help="where the features are extracted and projected: cpu or cuda")
    nw = sub.add_parser("network")
    nw.add_argument("--arch", default="alexnet")
    nw.add_argument("--size", type=int, default=224)
    nw.add_argument("--batch", type=int, default=128)
    nw.add_argument("--classes", type=int, default=10000)
    nw.add_argument("--steps", type=int, default=5)
    nw.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ld = sub.add_parser("loading")
    ld.add_argument("--images", type=int, default=2000)
    ld.add_argument("--workers", default="0,2")
    ld.add_argument("--keep", help="write the images to this folder and keep them (to train on, say)")
    ld.add_argument("--device", default="auto", help="where the third column decodes: auto (cuda when present), "
                    "cpu or cuda")
    args = ap.parse_args()
    {"kmeans": bench_kmeans, "memory": bench_memory, "network": bench_network,
     "loading": bench_loading}[args.what](args)


if __name__ == "__main__":
    main()
