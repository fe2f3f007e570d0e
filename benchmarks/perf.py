"""How close each part of a DeepCluster epoch comes to its limit, all measured side by side in one run, for the
demo network and data and for AlexNet at 224 px on a small image folder.

    .venv/bin/python benchmarks/perf.py [--rounds 2] [--images 10000] [--folder-images 800]
                                        [--only demo|alexnet|kmeans|run] [--extract-precision P] [--keep DIR]

For each setup it prints:
  1. one DeepCluster epoch / one plain supervised epoch of the same network on the same data (goal <= 1.20),
     alternating the two kinds of epoch so that the machine's load falls on both alike, after one of each left
     untimed (the process's first training steps build their kernels); the extraction pass runs in the
     precision ``--extract-precision auto`` picks here (int8 on CPUs that multiply int8 in hardware);
  2. achieved FLOP/s of the extraction pass and of the training pass / this run's matrix-multiply peak (fp32
     4096^3 products; goal >= 0.70). FLOPs per image are counted by torch's FlopCounterMode (convolutions and
     matrix products);
  3. our clustering stage (k-means, empty-cluster repair, pseudo-labels, sample list) / raw faiss k-means on the
     same whitened features (goal <= 1.10);
  4. scikit-learn's KMeans / ours, same features, k and iterations (Lloyd, random init; goal >= 10), and the
     same at a size where both are bound by matrix products (100,000 x 256 points, k = 1,000);
  5. images/s of the data pipeline alone (loader + augmented view) / of the model alone (training steps on a
     ready batch): above 1 the pipeline is never the bottleneck. An image folder is decoded into memory once
     (``--cache-gb``); the rate of decoding its files, as every pass would without the cache, is shown too.

Where a goal is out of reach it prints the bound that stops it: the epoch ratio an fp32 extraction pass at the
matrix-multiply peak would give, and the GFLOP/s of both k-means at scale.

``--only run`` times whole ``deepcluster train`` commands (AlexNet, batch 256, k 10, 2 epochs, report on, on the
800 photos), once with ``--extract-precision`` as given (default auto), once in fp32, and once as given with
``--no-report --eval-seeds 1``: the fixed cost of a run (start-up, decoding, the closing evaluation, the report,
checkpoints) is the command's time less its epochs' own time, read from its metrics.jsonl (goal <= 15 % of the
command, with the defaults). It then times the interpreter's exit after the
summary of a short run (small network, 1 epoch, 3 rounds in turn), through the command and through ``main()``
called from Python, which does not freeze the garbage collector.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepcluster import Config
from deepcluster.clustering import build_clustering
from deepcluster.data import make_loader
from deepcluster.device import Precisions, amp_dtype, extraction_dtype, keep_freed_memory, precision_name
from deepcluster.features import Reading
from deepcluster.recipe import profile, resolve
from deepcluster.sampler import pseudo_labels, uniform_over_clusters
from deepcluster.session import datasets, fresh_network, training_images
from deepcluster.space import Fitting, clustering_input
from deepcluster.train import method_for
from deepcluster.training import epoch_samples, train_on_labels
from deepcluster.training.step import TrainPass
from deepcluster.views import train_view


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def matmul_peak(device: torch.device, n: int = 4096, reps: int = 3) -> float:
    """FLOP/s of the best of ``reps`` fp32 ``n x n`` products (after one warm-up)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def flops_per_image(model, channels: int, n_classes: int) -> tuple[float, float]:
    """``(extraction, training step)`` FLOPs per image: eval forward of the body + fc; train forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    size, b = model.image_size, 4
    device = next(model.parameters()).device
    x = torch.randn(b, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.embed(x)
    extract = fc.get_total_flops() / b
    model.train()
    head = model.reset_head(n_classes)
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), torch.zeros(b, dtype=torch.long, device=device)).backward()
    model.zero_grad(set_to_none=True)
    del head
    return extract, fc.get_total_flops() / b


def profile_passes(model, xb: torch.Tensor, yb: torch.Tensor, opt) -> str:
    """Where the time of one extraction batch and one training step goes (torch.profiler, top operators)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if xb.is_cuda else [])
    embed = model.inference_embed()
    out = []
    for name, step in (("extraction batch", lambda: embed(xb)), ("training step", lambda: _train_step(model, opt,
                                                                                                       xb, yb))):
        with torch.inference_mode() if name.startswith("extraction") else torch.enable_grad():
            step()
            with profile(activities=acts) as prof:
                step()
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if xb.is_cuda else "self_cpu_time_total",
                                          row_limit=8, max_name_column_width=40)
        out.append(f"  profile of one {name} (batch {len(xb)}):\n" + table)
    return "\n".join(out)


def _train_step(model, opt, xb, yb) -> None:
    model.train()
    loss = F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sklearn_kmeans(x: np.ndarray, k: int, iters: int, init: str = "random"):
    """scikit-learn's Lloyd k-means run for ``iters`` iterations at most (it stops earlier only at a fixed point)."""
    from sklearn.cluster import KMeans as SkKMeans

    return SkKMeans(k, init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=0).fit(x)


def photo_folder(root: Path, n: int, classes: int = 8) -> Path:
    """``n`` photo-sized JPEGs (500 x 375, quality 90) in ``classes`` subfolders: noise blurred by upsampling, so
    that file sizes and decoding costs are like photos', not like white noise's."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(d / f"{i:05d}.jpg", quality=90)
    return root


def bench(name: str, cfg: Config, rounds: int, peak: float) -> list[tuple[str, str, str, str]]:
    device = torch.device(cfg.device)
    data, _ = datasets(cfg)
    n, n_classes = len(data), int(data.targets.max()) + 1
    model = fresh_network(cfg, data.channels, device)
    f_extract, f_train = flops_per_image(model, data.channels, n_classes)
    opt = torch.optim.SGD(model.body_parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    print(f"[{name}] {n} images of {data.name}, arch {cfg.arch} at {model.image_size} px, k = {cfg.k}, "
          f"batch {cfg.batch_size}, workers {'auto' if cfg.workers is None else cfg.workers}, extraction in "
          f"{precision_name(extraction_dtype(cfg, device, n))} from epoch 2: "
          f"{f_extract / 1e9:.3f} GFLOP per image to extract, {f_train / 1e9:.3f} to train", flush=True)

    # 1 and 2: DeepCluster and supervised epochs, alternating, after one of each left out (printed): the process's
    # first training steps create oneDNN's kernels and fault their memory in, a cost of the process, not of an epoch
    dc, sup, parts, v1 = [], [], [], method_for(cfg, device, Precisions.of(cfg, device, n))

    def supervised(r: int) -> None:
        head = model.reset_head(n_classes)
        head_opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # as many training samples as the DeepCluster epoch draws (--reassign passes over the images)
        m, rng = epoch_samples(cfg.reassign, n), np.random.default_rng(r)
        order = np.concatenate([rng.permutation(n) for _ in range(-(-m // n))])[:m]
        how = TrainPass(cfg.seed, cfg.batch_size, cfg.workers, amp_dtype(cfg.precision, device), cfg.crop_scale, cfg.lr)
        train_on_labels(model, [opt, head_opt], data, order, data.targets, how, r + 1)

    for r in range(-1, rounds):
        # epochs from 2 on, which extract in the epochs' precision (epoch 1 never in int8: Method.extraction)
        t, (_, m) = timed(lambda: v1.epoch(model, opt, data, r + 3))  # noqa: B023
        t_sup = timed(lambda: supervised(r + 1))[0]  # noqa: B023
        if r >= 0:
            dc.append(t)
            parts.append(m)
            sup.append(t_sup)
        else:
            print(f"  left out, the process's first: DeepCluster epoch {t:.1f} s (training "
                  f"{m['time_training']:.1f} s), then supervised epoch {t_sup:.1f} s", flush=True)
    med = lambda key: statistics.median(p[key] for p in parts)
    t_dc, t_sup = statistics.median(dc), statistics.median(sup)

    # 3 and 4: clustering on this epoch's whitened features
    _, x = clustering_input(model, data, device, Reading(cfg.batch_size, cfg.workers, desc=None),
                            Fitting("whitened", np.random.default_rng(0), cfg.pca_dim, cfg.pca_sample))
    where = "auto" if device.type == "cuda" else "cpu"

    def ours():
        clus = build_clustering(cfg, 0, where).fit(x)
        labels, _ = pseudo_labels(clus.labels_)
        return uniform_over_clusters(labels, n, np.random.default_rng(0))

    def raw_faiss():
        import faiss

        c = faiss.Clustering(x.shape[1], cfg.k)
        c.niter, c.seed, c.max_points_per_centroid, c.min_points_per_centroid = cfg.kmeans_iters, 0, 10_000_000, 1
        index = faiss.IndexFlatL2(x.shape[1])
        c.train(x, index)
        return index.search(x, 1)

    t_ours, t_faiss = [], []
    for _ in range(3):
        t_ours.append(timed(ours)[0])
        t_faiss.append(timed(raw_faiss)[0])
    t_sk, sk = timed(lambda: sklearn_kmeans(x, cfg.k, cfg.kmeans_iters))
    t_skpp = timed(lambda: sklearn_kmeans(x, cfg.k, cfg.kmeans_iters, "k-means++"))[0]
    iters = build_clustering(cfg, 0, where).fit(x).n_iter_
    lloyd_flops = 2 * x.shape[0] * x.shape[1] * cfg.k
    t_ours, t_faiss = statistics.median(t_ours), statistics.median(t_faiss)

    # 5: the pipeline alone against the model alone
    size = model.image_size
    sample = np.random.default_rng(0).permutation(n)
    gen = torch.Generator().manual_seed(0)

    def pipeline():
        for images, _ in make_loader(data, sample, cfg.batch_size, cfg.workers, device.type == "cuda"):
            train_view(images.to(device), size, data.mean, data.std, cfg.crop_scale, generator=gen)

    images, _ = next(iter(make_loader(data, sample, cfg.batch_size, cfg.workers)))
    xb = train_view(images.to(device), size, data.mean, data.std, cfg.crop_scale).contiguous(
        memory_format=torch.channels_last)
    yb = torch.from_numpy(data.targets[sample[:len(xb)]]).to(device)
    model.reset_head(n_classes)
    steps = max(2, n // cfg.batch_size)

    both = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def model_alone():
        for _ in range(steps):
            _train_step(model, both, xb, yb)
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_pipe = timed(pipeline)[0]
    t_model = timed(model_alone)[0]
    pipe_rate, model_rate = n / t_pipe, steps * len(xb) / t_model
    files = datasets(cfg, cache=False)[0] if cfg.data != "fashion-mnist" else None
    if files is not None:  # what every pass would pay without the in-memory copy
        t_files = timed(lambda: [b for b in make_loader(files, sample, cfg.batch_size, cfg.workers)])[0]

    # the training pass draws epoch_samples (--reassign passes over the images), not n
    ext_rate, train_rate = n / med("time_features"), epoch_samples(cfg.reassign, n) / med("time_training")
    print(profile_passes(model, xb, yb, both), flush=True)
    ok = lambda good: "met" if good else "NOT met"
    floor = 1 + n * f_extract / peak / t_sup  # the supervised epoch plus an extraction pass at the peak
    return [
        ("DeepCluster epoch / supervised epoch", f"{t_dc / t_sup:.2f} ({t_dc:.1f} s / {t_sup:.1f} s)", "<= 1.20",
         ok(t_dc / t_sup <= 1.20)),
        ("  floor: fp32 extraction at the matmul peak",
         f"{floor:.2f} (1 + {n * f_extract / peak:.1f} s / {t_sup:.1f} s)", "", ""),
        ("  share: extraction / clustering / training",
         f"{med('time_features') / t_dc:.0%} / {med('time_clustering') / t_dc:.0%} / "
         f"{med('time_training') / t_dc:.0%}", "", ""),
        ("extraction FLOP/s (as fp32) / matmul peak",
         f"{ext_rate * f_extract / peak:.2f} ({ext_rate * f_extract / 1e9:.0f} GFLOP/s, {ext_rate:,.0f} images/s)",
         ">= 0.70", ok(ext_rate * f_extract / peak >= 0.70)),
        ("training FLOP/s / matmul peak", f"{train_rate * f_train / peak:.2f} ({train_rate * f_train / 1e9:.0f}"
         f" GFLOP/s, {train_rate:,.0f} images/s)", ">= 0.70", ok(train_rate * f_train / peak >= 0.70)),
        ("our clustering stage / raw faiss k-means", f"{t_ours / t_faiss:.2f} ({t_ours:.2f} s / {t_faiss:.2f} s)",
         "<= 1.10", ok(t_ours / t_faiss <= 1.10)),
        ("scikit-learn KMeans / our k-means", f"{t_sk / t_ours:.1f} ({t_sk:.2f} s / {t_ours:.2f} s; "
         f"{sk.n_iter_} / {iters} iterations)", ">= 10", ok(t_sk / t_ours >= 10)),
        # the limit of both: each iteration is an (N, d) x (d, k) product, at best at the matmul peak
        ("  assignment GFLOP/s: scikit-learn / ours",
         f"{lloyd_flops * (sk.n_iter_ + 1) / t_sk / 1e9:.0f} / {lloyd_flops * (iters + 1) / t_ours / 1e9:.0f}"
         f" (peak {peak / 1e9:.0f})", "", ""),
        ("  scikit-learn with its k-means++ init / ours", f"{t_skpp / t_ours:.1f} ({t_skpp:.2f} s)", "", ""),
        ("data pipeline / model, images/s", f"{pipe_rate / model_rate:.1f} ({pipe_rate:,.0f} / {model_rate:,.0f})",
         "> 1", ok(pipe_rate > model_rate)),
    ] + ([("  decoding the files (no cache) / model", f"{n / t_files / model_rate:.1f} ({n / t_files:,.0f} / "
                                                        f"{model_rate:,.0f})", "", "")] if files is not None else [])


def whole_run(folder: Path, device: str, out: Path, precision: str, extra: tuple = ()) -> tuple[float, float, dict]:
    """``(seconds of the whole command, seconds of its epochs, the run's timing.json)`` of ``deepcluster train``
    on ``folder``, with the options ``extra`` besides."""
    cmd = [sys.executable, "-m", "deepcluster", "train", "--data", str(folder), "--recipe", "paper", "--arch",
           "alexnet", "--batch-size", "256", "--k", "10", "--epochs", "2", "--device", device, "--extract-precision",
           precision, "--out", str(out), "--overwrite", *extra]
    t = timed(lambda: subprocess.run(cmd, check=True, capture_output=True))[0]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = sum(r["time_features"] + r["time_clustering"] + r["time_training"] for r in rows if "time_training" in r)
    return t, epochs, json.loads((out / "timing.json").read_text())


LIGHT = ("--no-report", "--eval-seeds", "1")  # the closing work's options: no report, one k-means seed


def fixed_cost(folder: Path, images: int, device: str, tmp: Path, extract: str) -> list[tuple[str, ...]]:
    """The fixed cost of a whole run, and its parts as the run's timing.json gives them ("start-up": Python and
    the imports, the time of the command before training starts); in the training precision and in fp32 with
    the defaults, then with :data:`LIGHT`."""
    rows = []
    runs = [(p, ()) for p in dict.fromkeys((extract, "fp32"))] + [(extract, LIGHT)]
    for precision, extra in runs:
        t, epochs, timing = whole_run(folder, device, tmp / f"run-{precision}{'-light' if extra else ''}",
                                      precision, extra)
        name = precision_name(extraction_dtype(Config(extract_precision=precision), torch.device(device), images))
        share = (t - epochs) / t
        rows.append((f"fixed cost / whole 2-epoch run, {name} extraction{', ' + ' '.join(extra) if extra else ''}",
                     f"{share:.0%} ({t - epochs:.0f} s of {t:.0f} s; epochs {epochs:.0f} s)", "<= 15%",
                     "met" if share <= 0.15 else "NOT met"))
        parts = {"start-up": t - timing["seconds"], **timing["parts"]}
        parts["epochs"] -= epochs  # what the epochs' own timers leave out (loader start, bookkeeping)
        rows.append(("  of which " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if k != "epochs")
                     + f", between the epochs {parts['epochs']:.1f} s", "", "", ""))
    return rows


def exit_seconds(entry: list[str], args: list[str]) -> float:
    """Seconds from the last line a command prints (its summary) to its process being reaped: the interpreter's
    exit."""
    proc = subprocess.Popen([*entry, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = time.perf_counter()
    for _ in proc.stdout:
        last = time.perf_counter()
    proc.wait()
    return time.perf_counter() - last


def process_exit(folder: Path, tmp: Path, rounds: int = 3) -> list[tuple[str, ...]]:
    """The interpreter's exit after a short ``deepcluster train`` (small network, 1 epoch), through the command
    (``python -m deepcluster``, which freezes the garbage collector's view of the run) and through ``main()``
    called from Python (which does not), in turn."""
    args = ["train", "--data", str(folder), "--arch", "small", "--image-size", "32", "--k", "8", "--epochs", "1",
            "--device", "cpu", "--no-report", "--out", str(tmp / "run-exit"), "--overwrite"]
    entries = {"command": [sys.executable, "-u", "-m", "deepcluster"],
               "main()": [sys.executable, "-u", "-c", "import sys; from deepcluster.cli import main; sys.exit(main())"]}
    times = {name: [] for name in entries}
    for _ in range(rounds):
        for name, entry in entries.items():
            times[name].append(exit_seconds(entry, args))
    a, b = (statistics.median(v) for v in times.values())
    return [("exit after the summary, command / main() from Python", f"{a / b:.2f} ({a:.2f} s / {b:.2f} s)",
             "", "")]


def kmeans_at_scale(n: int = 100_000, d: int = 256, k: int = 1000, iters: int = 5) -> list[tuple[str, ...]]:
    """scikit-learn / ours where Lloyd's iterations are big matrix products: both near the matmul peak."""
    from deepcluster import KMeans

    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t_ours, ours = timed(lambda: KMeans(k, n_iter=iters, seed=0).fit(x))
    t_sk, sk = timed(lambda: sklearn_kmeans(x, k, iters))
    flops = 2 * n * d * k
    return [(f"scikit-learn KMeans / ours ({n:,} x {d}, k = {k:,}, {iters} iterations)",
             f"{t_sk / t_ours:.1f} ({t_sk:.2f} s / {t_ours:.2f} s)", ">= 10", "met" if t_sk / t_ours >= 10 else
             "NOT met"),
            ("  assignment GFLOP/s: scikit-learn / ours",
             f"{flops * (sk.n_iter_ + 1) / t_sk / 1e9:.0f} / {flops * (ours.n_iter_ + 1) / t_ours / 1e9:.0f}", "",
             "")]


def main() -> None:
    keep_freed_memory()  # as the deepcluster command does
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternating (DeepCluster, supervised) epoch pairs")
    ap.add_argument("--images", type=int, default=10000, help="Fashion-MNIST training images of the demo setup")
    ap.add_argument("--folder-images", type=int, default=800, help="photos in the AlexNet setup's folder")
    ap.add_argument("--only", choices=("demo", "alexnet", "kmeans", "run"), help="run one setup")
    ap.add_argument("--extract-precision", default="auto", help="the runs' --extract-precision (default auto)")
    ap.add_argument("--keep", help="keep the photo folder and the runs of --only run in this folder")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_peak(torch.device(device))
    print(f"{torch.get_num_threads()} threads, device {device}; matrix-multiply peak (fp32, 4096^3) "
          f"{peak / 1e9:.0f} GFLOP/s")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        if args.only in (None, "demo"):
            cfg = Config.from_yaml("configs/fashion-mnist.yaml")
            cfg.subset, cfg.device, cfg.report = args.images, device, False
            cfg.extract_precision = args.extract_precision
            cfg = resolve(cfg, profile(training_images(cfg)))  # the auto recipe, as make demo runs it
            results["demo"] = bench("demo", cfg.validate(), args.rounds, peak)
        if args.only in (None, "alexnet"):
            folder = photo_folder(Path(tmp) / "photos", args.folder_images)
            cfg = resolve(Config(data=str(folder), recipe="paper", k=100, device=device, report=False,
                                 extract_precision=args.extract_precision))
            results["alexnet"] = bench("alexnet", cfg.validate(), args.rounds, peak)
        if args.only in (None, "run"):
            folder = Path(tmp) / "photos"
            if not folder.exists():
                photo_folder(folder, args.folder_images)
            results["whole run"] = (fixed_cost(folder, args.folder_images, device, Path(tmp), args.extract_precision)
                                    + process_exit(folder, Path(tmp)))
        if args.only in (None, "kmeans"):
            results["k-means at scale"] = kmeans_at_scale()
    again = matmul_peak(torch.device(device))
    print(f"\nmedian of {args.rounds} alternating rounds; peak re-measured: {again / 1e9:.0f} GFLOP/s")
    for name, rows in results.items():
        print(f"\n{name}:")
        w = max(len(r[0]) for r in rows)
        for a, b, goal, status in rows:
            print(f"  {a:<{w}}  {b:<52} {goal:<8} {status}")


if __name__ == "__main__":
    main()
