"""The ``deepcluster`` command line. Every Config field is an option of ``train``."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from typing import Optional, Sequence

from .config import Config, DeepClusterError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepcluster",
        description="DeepCluster (Caron et al., ECCV 2018): unsupervised visual features by alternating k-means "
                    "on the network's features and training the network to predict the clusters.")
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
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config.from_yaml(args.config) if args.config else Config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return dataclasses.replace(cfg, **given)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume and args.overwrite:
        print("deepcluster: error: --resume and --overwrite exclude each other: pick one", file=sys.stderr)
        return 2
    warnings.formatwarning = lambda msg, cat, *a, **k: f"deepcluster: warning: {msg}\n"
    try:
        if args.command == "train":
            from .train import train

            train(config_from_args(args), args.out, resume=args.resume, overwrite=args.overwrite)
    except DeepClusterError as e:
        print(f"deepcluster: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepcluster: interrupted; the last checkpoint is intact, continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
