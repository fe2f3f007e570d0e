"""The ``deepcluster`` command line. Every Config field is an option of ``train``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from typing import Optional, Sequence

from . import __version__
from .config import Config, ConfigError, DeepClusterError


def _add_config_options(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        typ = f.type.replace("Optional[", "").rstrip("]")
        help_ = f.metadata.get("help", "") + (f" (default: {f.default})" if f.default is not None else "")
        if typ == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            p.add_argument(flag, dest=f.name, type={"int": int, "float": float, "str": str}[typ], default=None,
                           metavar=f.name.upper(), help=help_)


def _add_run_source(p: argparse.ArgumentParser) -> None:
    """--run RUN_DIR or --checkpoint FILE, one of them required."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="run directory (uses its checkpoint.pt)")
    src.add_argument("--checkpoint", metavar="FILE", help="checkpoint file")


def _add_data(p: argparse.ArgumentParser, help_: str) -> None:
    """--data (what ``help_`` says) and --data-root, the built-in dataset's folder."""
    p.add_argument("--data", help=help_)
    p.add_argument("--data-root", help="folder of the built-in dataset's files")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepcluster",
        description="DeepCluster (Caron et al., ECCV 2018): unsupervised visual features by alternating k-means "
                    "on the network's features and training the network to predict the clusters.")
    parser.add_argument("--version", action="version", version=f"deepcluster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a network with DeepCluster and write a run directory",
                       description="Train with DeepCluster. Settings come from the defaults, then --config, "
                                   "then the options given here.")
    t.add_argument("--config", metavar="FILE.yaml", help="YAML file of settings (keys as the options below)")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its checkpoint (starts it if RUN_DIR has none)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in RUN_DIR")
    _add_config_options(t)

    from .evaluate.protocols import PROTOCOLS

    e = sub.add_parser("eval", help="evaluate a run's features with the paper's protocols",
                       description="Evaluate a trained network (or its random initialisation). Results are printed "
                                   "and written to RUN_DIR/eval/PROTOCOL[-random].json.")
    e.add_argument("protocols", nargs="+", choices=PROTOCOLS + ("all",), metavar="PROTOCOL",
                   help="probe: linear probe on every conv layer; knn: weighted cosine kNN; cluster: k-means with the "
                        "true number of classes; transfer: fine-tune fc layers / all layers on a target dataset; "
                        "retrieval: R-MAC mean average precision; all: every one (several may be given)")
    _add_run_source(e)
    e.add_argument("--random-init", action="store_true", help="same network at its random initialisation")
    _add_data(e, "labelled training images (default: the run's own data)")
    e.add_argument("--val-data", help="labelled test images (default: the run's held-out split)")
    e.add_argument("--epochs", type=int, default=10, help="epochs of the probe and of transfer (default 10)")
    e.add_argument("--views", choices=("auto", "centre", "augmented"), default="auto",
                   help="probe: 'centre' computes every training image's centre view once and trains the probes on "
                        "it (fast enough to converge; a linear classifier on the pixels is trained beside them), "
                        "'augmented' a random crop per image and epoch, as the paper (a network pass per epoch); "
                        "auto: centre when those views fit in 4 GiB")
    e.add_argument("--layer", help="layer for knn / cluster (default fc) and retrieval (default last conv)")
    e.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN vote (default 20)")
    e.add_argument("--target-data", help="transfer: labelled target training images (default: the run's data)")
    e.add_argument("--target-val-data", help="transfer: labelled target test images")
    e.add_argument("--queries", type=int, default=1000, help="retrieval: test images used as queries (default 1000)")
    _add_device(e)

    r = sub.add_parser("report", help="(re)write RUN_DIR/report/index.html, the run's page of pictures and tables",
                       description="Write the run report: one self-contained HTML page (opens offline) with the "
                                   "config, curves, cluster sizes and images, clusters against labels, a t-SNE "
                                   "map, first-layer filters and the evaluation tables. Training writes it too.")
    r.add_argument("run", metavar="RUN_DIR")
    _add_data(r, "the run's training images, if they moved (default: the run's own)")
    r.add_argument("--map-images", type=int, default=1000, help="images in the t-SNE map (default 1000)")
    _add_device(r)

    v = sub.add_parser("visualize", help="pictures of what filters respond to, as grid PNGs")
    vsub = v.add_subparsers(dest="what", required=True, metavar="WHAT")
    vf = vsub.add_parser("filters", help="images made by gradient ascent to excite a sample of a layer's filters",
                         description="Start from noise and maximise each filter's mean activation (with L2 decay, "
                                     "blur and jitter), for a sample of the filters of one conv layer.")
    vt = vsub.add_parser("top-images", help="the dataset images that excite a sample of a layer's filters most")
    for p_ in (vf, vt):
        _add_run_source(p_)
        p_.add_argument("--layer", type=int, required=True, metavar="N", help="conv layer, 1 = first")
        p_.add_argument("--out", metavar="FILE.png", help="where to write the grid (default: next to the "
                                                          "checkpoint, filters-convN.png / top-images-convN.png)")
        p_.add_argument("--seed", type=int, default=0, help="which filters are drawn (default 0)")
        _add_device(p_)
        _add_data(p_, "images (default: the run's training data); top-images searches them, filters takes their "
                      "channels and normalisation")
    vf.add_argument("--filters", type=int, default=32, help="filters drawn at random (default 32)")
    vf.add_argument("--steps", type=int, default=300, help="gradient-ascent steps (default 300)")
    vf.add_argument("--size", type=int, help="image side in px (default: the network's input size)")
    vt.add_argument("--filters", type=int, default=12, help="filters drawn at random (default 12)")
    vt.add_argument("--top", type=int, default=9, help="images per filter (default 9, as in the paper)")

    i = sub.add_parser("import-original", help="convert a checkpoint of the reference implementation into ours",
                       description="Convert a checkpoint of the reference DeepCluster code (facebookresearch/"
                                   "deepcluster: AlexNet or VGG-16, with or without Sobel) into a deepcluster "
                                   "checkpoint that 'eval' and 'visualize' take. Nothing in the file is executed.")
    i.add_argument("source", metavar="CHECKPOINT.pth.tar")
    i.add_argument("out", metavar="OUT.pt")
    i.add_argument("--data", default="", help="images to record as the checkpoint's data (else give --data to "
                                              "eval / visualize)")
    i.add_argument("--overwrite", action="store_true", help="replace OUT.pt if it exists")

    c = sub.add_parser("compare", help="one Markdown table of the evaluation results of several runs")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", metavar="FILE.md", help="also write the table to this file")
    return parser


def run_eval(args: argparse.Namespace) -> None:
    from .evaluate.protocols import PROTOCOLS, load_for_eval, result_name, run_protocol
    from .rundir import RunDir

    if args.epochs < 1:
        raise ConfigError(f"--epochs {args.epochs}: train the probe for at least one epoch")
    setup = load_for_eval(args.run or args.checkpoint, args.data, args.val_data, args.data_root, args.random_init,
                          args.device)
    run = RunDir(setup.run_dir)
    for name in PROTOCOLS if "all" in args.protocols else dict.fromkeys(args.protocols):
        res = run_protocol(name, setup, epochs=args.epochs, layer=args.layer, knn_k=args.knn_k,
                           target_data=args.target_data, target_val_data=args.target_val_data,
                           queries=args.queries, seeds=setup.cfg.eval_seeds, views=args.views)
        run.write_json(result_name(name, args.random_init), res)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items() if k != "protocol"}
        print(f"{name}: {json.dumps(shown)}")


def run_visualize(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .evaluate.protocols import load_for_eval
    from .rundir import atomic_write
    from .visualize import gradient_ascent, image_rows, sample_filters, tile_grid, top_images

    setup = load_for_eval(args.run or args.checkpoint, args.data, None, args.data_root, device=args.device)
    model, ds = setup.model, setup.train_set
    filters = sample_filters(model, args.layer, args.filters, args.seed)
    name = "filters" if args.what == "filters" else "top-images"
    out = Path(args.out or setup.run_dir / f"{name}-conv{args.layer}.png")
    if args.what == "filters":
        if args.steps < 1:
            raise ConfigError(f"--steps {args.steps}: take at least one step")
        size = args.size or setup.image_size
        if size < 8:
            raise ConfigError(f"--size {size} is too small: use at least 8 pixels")
        images = gradient_ascent(model, args.layer, filters, size, ds.channels, ds.mean, ds.std, steps=args.steps,
                                 seed=args.seed, device=setup.device)
        grid = tile_grid(images, [f"#{f}" for f in filters], cols=8, cell=max(64, size))
    else:
        if args.top < 1:
            raise ConfigError(f"--top {args.top}: show at least one image per filter")
        best, acts = top_images(model, ds, args.layer, filters, setup.image_size, n=args.top,
                                batch_size=setup.cfg.batch_size, device=setup.device)
        rows = [[ds[int(i)][0] for i in row] for row in best]
        grid = image_rows(rows, [f"conv{args.layer} #{f}\ntop {a[0]:.2f}" for f, a in zip(filters, acts)],
                          cell=64, label_w=110)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: grid.save(tmp, format="PNG"))
    print(f"{name} of {len(filters)} conv{args.layer} filters of {setup.run_dir}: {out}")


def run_import_original(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .checkpoint import load_weights_only
    from .state import RunState

    src, out = Path(args.source), Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists: choose another OUT.pt or pass --overwrite")
    state = RunState.from_original(load_weights_only(src), str(src), args.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    state.save(out)
    print(f"{src}: {state.config.arch}{' + sobel' if state.config.sobel else ''}, epoch {state.epoch}, head of "
          f"{state.head_classes} clusters -> {out}")


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config.from_yaml(args.config) if args.config else Config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return dataclasses.replace(cfg, **given)


def one_line(e: Exception) -> str:
    """The error's own message. An error raised in a DataLoader worker process arrives wrapped in the worker's
    traceback, whose last line is ``module.ErrorType: message``: that message is given instead."""
    msg = str(e)
    if "Original Traceback" in msg:
        msg = msg.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return msg


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        print("deepcluster: error: --resume and --overwrite exclude each other: pick one", file=sys.stderr)
        return 2
    warnings.formatwarning = lambda msg, cat, *a, **k: f"deepcluster: warning: {msg}\n"
    try:
        if args.command == "train":
            from .train import train

            train(config_from_args(args), args.out, resume=args.resume, overwrite=args.overwrite)
        elif args.command == "eval":
            run_eval(args)
        elif args.command == "report":
            from .visualize import build_report

            if args.map_images < 0:
                raise ConfigError(f"--map-images {args.map_images} must be >= 0")
            print(build_report(args.run, args.data, args.data_root, args.device, args.map_images))
        elif args.command == "visualize":
            run_visualize(args)
        elif args.command == "import-original":
            run_import_original(args)
        elif args.command == "compare":
            from .evaluate.compare import compare_runs
            from .rundir import atomic_write_text

            table = compare_runs(args.runs)
            print(table)
            if args.out:
                atomic_write_text(args.out, table + "\n")
    except DeepClusterError as e:
        print(f"deepcluster: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepcluster: interrupted; the last checkpoint is intact, continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
