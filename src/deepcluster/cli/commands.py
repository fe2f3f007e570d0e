"""What each sub-command does with its parsed arguments (``train`` and ``report`` are one call each, in
:func:`deepcluster.cli.main`)."""
from __future__ import annotations

import argparse
import json

from ..settings import ConfigError


def run_eval(args: argparse.Namespace) -> None:
    from dataclasses import fields

    from ..evaluate.protocols import PROTOCOLS, EvalOptions, load_for_eval, result_name, run_protocol
    from ..rundir import RunDir

    if args.epochs < 1:
        raise ConfigError(f"--epochs {args.epochs}: train the probe for at least one epoch")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: give transfer at least one step per fit")
    names = list(dict.fromkeys(args.protocols))
    if "all" in names:
        skipped = [p for p, spec in PROTOCOLS.items() if spec.needs and not getattr(args, spec.needs)]
        for p in skipped:
            print(f"{p}: skipped (needs --{PROTOCOLS[p].needs.replace('_', '-')})")
        names = [p for p in PROTOCOLS if p not in skipped]
    setup = load_for_eval(args.run or args.checkpoint, args.data, args.val_data, args.data_root, args.random_init,
                          args.device, load_data=names != ["instance"])  # instance reads its own images only
    run = RunDir(setup.run_dir)
    # every option of the command line is a protocol option of the same name; the k-means seeds are the run's
    options = {f.name: getattr(args, f.name) for f in fields(EvalOptions) if f.name not in ("seeds", "progress")}
    for name in names:
        res = run_protocol(name, setup, seeds=setup.cfg.eval_seeds, **options)
        run.write_json(result_name(name, args.random_init), res)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()
                 if k not in ("protocol", "fits")}  # transfer's fits, one by one: in the JSON file
        print(f"{name}: {json.dumps(shown)}")
        if res.get("below"):
            print(f"{name}: warning: {' and '.join(res['below'])} below the pixel floor ({res['pixels']:.3f}, a linear "
                  f"classifier on the target's pixels): these features do not carry over to this target")


def run_visualize(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..evaluate.protocols import load_for_eval
    from ..features import Reading
    from ..rundir import atomic_write
    from ..visualize import gradient_ascent, image_rows, sample_filters, tile_grid, top_images
    from ..visualize.filters import Ascent

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
        images = gradient_ascent(model, args.layer, filters, size, ds, Ascent(args.steps, seed=args.seed),
                                 setup.device)
        grid = tile_grid(images, [f"#{f}" for f in filters], cols=8, cell=max(64, size))
    else:
        if args.top < 1:
            raise ConfigError(f"--top {args.top}: show at least one image per filter")
        best, acts = top_images(model, ds, args.layer, filters, setup.image_size, args.top,
                                Reading(setup.cfg.batch_size), setup.device)
        rows = [[ds[int(i)][0] for i in row] for row in best]
        grid = image_rows(rows, [f"conv{args.layer} #{f}\ntop {a[0]:.2f}" for f, a in zip(filters, acts)],
                          cell=64, label_w=110)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: grid.save(tmp, format="PNG"))
    print(f"{name} of {len(filters)} conv{args.layer} filters of {setup.run_dir}: {out}")


def run_import_original(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..checkpoint import load_weights_only
    from ..state import RunState

    src, out = Path(args.source), Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists: choose another OUT.pt or pass --overwrite")
    state = RunState.from_original(load_weights_only(src), str(src), args.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    state.save(out)
    print(f"{src}: {state.config.arch}{' + sobel' if state.config.sobel else ''}, epoch {state.epoch}, head of "
          f"{state.head_classes} clusters -> {out}")


def _groups(args: argparse.Namespace):
    """The groups a command shows, from its --clusters / --grouping, checked."""
    from ..export.groups import parse_clusters
    from ..export.table import Shown

    if args.grouping != "kmeans" and args.clusters is None:
        raise ConfigError(f"--grouping {args.grouping} draws the groups of --clusters: give --clusters K or auto too")
    return Shown(parse_clusters(args.clusters), args.grouping)


def _source(args: argparse.Namespace):
    """The run and images of an export command's --run / --data / --data-root / --device."""
    from ..export.table import Source

    return Source(args.run, args.data, args.data_root, getattr(args, "device", "auto"))


def _output(args: argparse.Namespace):
    from ..export.table import Output

    return Output(args.out, args.overwrite)


def _say_groups(done: dict) -> None:
    """What groups a command showed, and for --clusters auto the curve it chose from."""
    from ..clustering.number import SAMPLES

    choice = done.get("choice")
    if choice is not None:
        print(f"how many groups: {choice.criterion} of the tree's cuts, the mean over {SAMPLES} disjoint samples of "
              f"images (higher is better; * the K chosen, + the best score)")
        mark = lambda k: "*" if k == choice.k else "+" if k == choice.best else " "
        cells = [f"{k:>3}: {s:.3f}{mark(k)}" for k, s in zip(choice.ks, choice.scores)]
        for i in range(0, len(cells), 8):
            print("  " + "  ".join(cells[i:i + 8]))
    print(f"groups: {done['shown']}")


def run_export(args: argparse.Namespace) -> None:
    if args.command == "export":
        from ..export.groups import parse_levels
        from ..export.table import export_clusters

        done = export_clusters(_source(args), _output(args), None, args.folders, args.copy, _groups(args),
                               parse_levels(args.levels))
        _say_groups(done)
        print(f"{done['images']} images in {done['clusters']} clusters -> {done['table']}")
        if "folders" in done:
            f = done["folders"]
            print(f"{f['folders']} folders of {f['images']} {f['how']} -> {f['out']}")
        return
    if args.data is None:
        raise ConfigError(f"'{args.command}' needs the images: pass --data FOLDER")
    if args.command == "assign":
        from ..export.assign import assign_images

        done = assign_images(_source(args), _output(args), _groups(args))
        _say_groups(done)
        if done["note"]:
            print(done["note"])
        print(f"{done['images']} images placed in {done['clusters_used']} clusters; {done['outside']} lie at least as "
              f"far from their centroid as every training image of their cluster (fit = 1) -> {done['table']}")
    else:
        from ..export.embed import embed_images

        done = embed_images(_source(args), _output(args), args.layer, args.space)
        if done["note"]:
            print(done["note"])
        print(f"{done['images']} x {done['dim']} features ({done['layer']}, {done['space']}) -> {done['features']}, "
              f"names -> {done['names']}")


def run_train(args: argparse.Namespace) -> None:
    from .. import distributed as dist
    from ..train import train
    from .parser import config_from_args

    cfg = config_from_args(args)
    # Under torchrun the command holds the process group until main has printed the error, if any: an error that
    # reached every rank is printed by each before any leaves (torchrun stops the others when one exits).
    dist.setup(cfg.device)
    train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)


def run_report(args: argparse.Namespace) -> None:
    from ..visualize import build_report

    if args.map_images < 0:
        raise ConfigError(f"--map-images {args.map_images} must be >= 0")
    shown = _groups(args)
    print(build_report(args.run, args.data, args.data_root, args.device, args.map_images, shown.clusters,
                       shown.grouping))


def run_compare(args: argparse.Namespace) -> None:
    from ..evaluate.compare import compare_runs
    from ..rundir import atomic_write_text

    table = compare_runs(args.runs)
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")


def run_duplicates(args: argparse.Namespace) -> None:
    from ..export.duplicates import find_duplicates

    done = find_duplicates(_source(args), args.threshold, args.by, args.space, args.probe, _output(args),
                           _groups(args))
    _say_groups(done)
    print(f"{done['pairs']} pairs of {done['by']} at similarity >= {done['threshold']} in {done['groups']} groups "
          f"({done['images_in_groups']} images; {done['compared']} pairs compared of {done['all_pairs']}) -> "
          f"{done['table']}, {done['groups_table']}")


def run_sample(args: argparse.Namespace) -> None:
    from ..export.sample import sample_representatives

    done = sample_representatives(_source(args), args.per_cluster, args.spread, _output(args), args.folders,
                                  args.copy, _groups(args))
    _say_groups(done)
    print(f"{done['images']} representatives of {done['clusters']} clusters -> {done['table']}")
    if "folders" in done:
        print(f"{done['folders']['folders']} folders -> {done['folders']['out']}")


def recipe_input_size(folder) -> int:
    """The input size of the network the auto recipe chooses for ``folder`` (``prepare``'s default: it stores what
    ``train`` reads with the defaults)."""
    from .. import recipe
    from ..data import default_image_size
    from ..settings import DataSettings

    return default_image_size(DataSettings(data=str(folder.root)), recipe.auto_settings(recipe.profile(folder))["arch"])


def run_prepare(args: argparse.Namespace) -> None:
    import time

    from ..data import prepare

    t = time.perf_counter()
    done = prepare(args.src, args.dest, args.image_size or recipe_input_size, args.quality, args.workers,
                   args.strict)
    n, gb = done["images"], done["bytes"] / 1e9
    if done["already"]:
        print(f"{args.dest} already holds the {n} images of {args.src} prepared at {done['load_size']} px: nothing "
              f"to do")
        return
    again = f", {done['done_before']} of them found whole from before" if done["done_before"] else ""
    print(f"prepared {n} images at {done['load_size']} px into {done['shards']} shard(s){again}: {gb:.2f} GB "
          f"({done['bytes'] / max(n, 1) / 1e3:.1f} KB per image) in {time.perf_counter() - t:.0f} s -> "
          f"train with --data {args.dest}")


RUNNERS = {"prepare": run_prepare, "train": run_train, "eval": run_eval, "report": run_report,
           "visualize": run_visualize, "import-original": run_import_original, "compare": run_compare,
           "export": run_export, "assign": run_export, "embed": run_export, "duplicates": run_duplicates,
           "sample": run_sample}
