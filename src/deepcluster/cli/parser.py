"""The command line's grammar: one sub-command per job, every Config field an option of ``train``."""
from __future__ import annotations

import argparse
import dataclasses

from .. import __version__
from ..config import Config


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """Every Config field an option, its help from its metadata (and, for one the recipe chooses, the recipe's rule
    and the paper's value)."""
    from ..recipe import PAPER, RULES

    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        typ = f.type.replace("Optional[", "").rstrip("]")
        help_ = f.metadata["help"] + (f" (default: {f.default})" if f.default is not None else "")
        if f.metadata["recipe"]:
            help_ += f" (default: the recipe's; auto: {RULES[f.name]}; paper: {PAPER[f.name]})"
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


def _add_run(p: argparse.ArgumentParser, device: bool = True) -> None:
    """RUN_DIR, the --data / --data-root its training images moved to, and --device."""
    p.add_argument("run", metavar="RUN_DIR")
    _add_data(p, "the run's training images, if they moved (default: the run's own)")
    if device:
        _add_device(p)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepcluster",
        description="DeepCluster (Caron et al., ECCV 2018): unsupervised visual features by alternating k-means "
                    "on the network's features and training the network to predict the clusters.")
    parser.add_argument("--version", action="version", version=f"deepcluster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _prepare_command(sub)
    _train_command(sub)
    _eval_command(sub)
    r = _report_command(sub)
    _visualize_commands(sub)
    _import_and_compare_commands(sub)
    x, a, m = _table_commands(sub)
    d, s_ = _search_commands(sub)
    for p_ in (x, a, m, d, s_):
        p_.add_argument("--overwrite", action="store_true", help="replace the outputs if they exist")
    for p_ in (x, a, d, s_, r):
        _add_groups(p_)
    x.add_argument("--levels", metavar="K,K,...",
                   help="also each image's group in the tree cut at each of these numbers of groups (columns "
                        "level_K), e.g. 5,20,100: groups that nest, coarse to fine")
    return parser


def _prepare_command(sub) -> None:
    """prepare SRC DEST."""
    pr = sub.add_parser("prepare", help="write an image folder once into shards that load several times faster",
                        description="Decode every image of SRC once, square it at the load size of --image-size "
                                    "networks (shorter side 256 for 224; by default the network train chooses) "
                                    "and store it as a JPEG in shards of DEST; "
                                    "then 'train --data DEST' (and eval, export, ...) read DEST. An interrupted "
                                    "prepare resumes when run again; a half-written DEST is never read as data.")
    pr.add_argument("src", metavar="SRC", help="folder of images (searched recursively)")
    pr.add_argument("dest", metavar="DEST", help="new folder to write (outside SRC)")
    pr.add_argument("--image-size", type=int,
                    help="input size of the networks that will read it (224: stored at 256 px). Default: the "
                         "input size of the network the auto recipe chooses for SRC (224 for ImageNet-like folders, "
                         "over 100,000 images of 128 px or more; else the small net's 32)")
    pr.add_argument("--quality", type=int, default=90,
                    help="JPEG quality of the stored squares (default 90; colour kept at full resolution)")
    pr.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    pr.add_argument("--strict", action="store_true", help="unreadable files are an error instead of skipped")


def _train_command(sub) -> None:
    """train: every Config field an option."""
    t = sub.add_parser("train", help="train a network with DeepCluster and write a run directory",
                       description="Train with DeepCluster. Settings come from the defaults, then --config, "
                                   "then the options given here.")
    t.add_argument("--config", metavar="FILE.yaml", help="YAML file of settings (keys as the options below)")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from its checkpoint (starts it if RUN_DIR has none)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in RUN_DIR")
    _add_config_options(t)


def _eval_command(sub) -> None:
    """eval PROTOCOL... : the protocols of the registry and their options."""
    from ..evaluate.protocols import PROTOCOLS

    e = sub.add_parser("eval", help="evaluate a run's features with the paper's protocols",
                       description="Evaluate a trained network (or its random initialisation). Results are printed "
                                   "and written to RUN_DIR/eval/PROTOCOL[-random].json.")
    e.add_argument("protocols", nargs="+", choices=tuple(PROTOCOLS) + ("all",), metavar="PROTOCOL",
                   help="; ".join(f"{name}: {p.help}" for name, p in PROTOCOLS.items())
                   + "; all: every one whose inputs are given (several may be given)")
    _add_run_source(e)
    e.add_argument("--random-init", action="store_true", help="same network at its random initialisation")
    _add_data(e, "labelled training images (default: the run's own data)")
    e.add_argument("--val-data", help="labelled test images (default: the run's held-out split)")
    e.add_argument("--epochs", type=int, default=10, help="epochs of the probe (default 10)")
    e.add_argument("--steps", type=int, help="transfer: at most this many steps per fit (default 1000); each fit "
                                             "stops earlier once the held-out tenth of the target's training "
                                             "images has not improved for 10 passes")
    e.add_argument("--views", choices=("auto", "centre", "augmented"), default="auto",
                   help="probe: 'centre' computes every training image's centre view once and trains the probes on "
                        "it (fast enough to converge; a linear classifier on the pixels is trained beside them), "
                        "'augmented' a random crop per image and epoch, as the paper (a network pass per epoch); "
                        "auto: centre when those views fit in 4 GiB")
    e.add_argument("--layer", help="layer for knn / cluster (default fc) and the retrievals (default last conv)")
    e.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN vote (default 20)")
    e.add_argument("--target-data", help="transfer: the labelled target, another dataset than the training data: a "
                                         "folder (one subfolder per class) or digits (scikit-learn's, offline)")
    e.add_argument("--target-val-data", help="transfer: the target's test images (default: every fifth image of "
                                             "--target-data held out)")
    e.add_argument("--queries", type=int, default=1000,
                   help="class-retrieval: test images used as queries; copies: images copied as queries (default 1000)")
    e.add_argument("--images", metavar="FOLDER",
                   help="instance: the benchmark's images; copies: the database (default: the run's test images)")
    e.add_argument("--ground-truth", metavar="PATH",
                   help="instance: the folder of NAME_query/_good/_ok/_junk.txt files, or a revisited gnd_*.pkl")
    e.add_argument("--gt-protocol", default="medium", choices=("easy", "medium", "hard"),
                   help="instance, revisited ground truth: which positives count (default medium)")
    e.add_argument("--whiten-data", metavar="FOLDER",
                   help="copies / instance: images to learn the regional whitening on (instance: required, e.g. "
                        "Paris6k for Oxford5k; copies: default 1,000 of the run's training images)")
    e.add_argument("--max-size", type=int,
                   help="copies / instance: the images' longer side (default 1024, or 4 x the input of a <= 64 px "
                        "network)")
    _add_device(e)


def _visualize_commands(sub) -> None:
    """visualize filters | top-images."""
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


def _import_and_compare_commands(sub) -> None:
    """import-original and compare."""
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


def _report_command(sub) -> argparse.ArgumentParser:
    """report RUN_DIR."""
    r = sub.add_parser("report", help="(re)write RUN_DIR/report/index.html, the run's page of pictures and tables",
                       description="Write the run report: one self-contained HTML page (opens offline) with the "
                                   "config, curves, cluster sizes and images, clusters against labels, a t-SNE "
                                   "map, first-layer filters and the evaluation tables. Training writes it too.")
    _add_run(r)
    r.add_argument("--map-images", type=int, default=1000, help="images in the t-SNE map (default 1000)")
    return r


def _table_commands(sub) -> tuple:
    """export, assign and embed."""
    x = sub.add_parser("export", help="the run's clusters by file: a table, and optionally a folder per cluster",
                       description="One row per training image: its path relative to the data folder (its index "
                                   "for the built-in dataset), cluster, distance to the centroid, rank in its "
                                   "cluster, the cluster's size, and its label when there are labels.")
    _add_run(x, device=False)
    x.add_argument("--out", metavar="FILE", help="the table (default RUN_DIR/clusters.csv, or clusters-k30.csv, "
                   "clusters-tree-k30.csv, clusters-auto.csv with --clusters; .jsonl for JSON lines)")
    x.add_argument("--folders", metavar="DIR", help="also one folder per cluster, largest first, of links to its "
                                                     "images, most central first (never inside the data folder)")
    x.add_argument("--copy", action="store_true", help="with --folders: copies instead of links")

    a = sub.add_parser("assign", help="place new images in the run's clusters (nearest centroid)",
                       description="The trained network's features of each image, in the run's clustering space, "
                                   "and its nearest centroid. The table is export's, with 'fit': the share of the "
                                   "cluster's training images nearer its centroid (near 1: fits no cluster well).")
    a.add_argument("run", metavar="RUN_DIR")
    _add_data(a, "the images to place: a folder, or fashion-mnist / fashion-mnist:test")
    a.add_argument("--out", metavar="FILE", help="the table (default RUN_DIR/assigned.csv)")
    _add_device(a)

    m = sub.add_parser("embed", help="the features of any images, streamed to a .npy file with their names",
                       description="Features of every image of --data as float32 rows of FILE.npy (numpy "
                                   "memory-maps it), their names in FILE.csv beside it (pandas reads it).")
    m.add_argument("run", metavar="RUN_DIR")
    _add_data(m, "the images: a folder, or fashion-mnist / fashion-mnist:test")
    m.add_argument("--out", metavar="FILE.npy", required=True)
    m.add_argument("--layer", default="fc", help="fc (the clustered output, default) or conv1..convN (pooled)")
    m.add_argument("--space", default="raw", choices=("raw", "l2", "clustering"),
                   help="raw, l2 (rows normalised) or clustering (the run's: PCA-whitened + L2 for v1)")
    _add_device(m)
    return x, a, m


def _search_commands(sub) -> tuple:
    """duplicates and sample."""
    d = sub.add_parser("duplicates", help="duplicate training images: copies of one picture, or close features",
                       description="Pairs of training images that are copies of one picture at another size or "
                                   "encoding (--by copies: whole-image 8 x 8 grey thumbnails whose correlation is "
                                   "at least --threshold, aspect ratio kept), or whose features are close (--by "
                                   "features: cosine similarity in --space). Each image is compared exactly with "
                                   "the members of its --probe nearest clusters (the cost grows with the sum of "
                                   "the squared cluster sizes, not N squared); the pairs and the groups they link, "
                                   "as two tables.")
    _add_run(d)
    d.add_argument("--by", default="copies", choices=("copies", "features"),
                   help="copies (default): the same picture resized or re-encoded; features: semantic duplicates")
    d.add_argument("--threshold", type=float, help="similarity of a pair (default 0.98 for copies, 0.9 for features)")
    d.add_argument("--space", choices=("clustering", "fc"),
                   help="for --by features: clustering, the run's clustering space (default), or fc (L2-normalised)")
    d.add_argument("--probe", type=int, default=2,
                   help="nearest clusters each image is compared in (default 2; 1: its own cluster only)")
    d.add_argument("--out", metavar="FILE", help="the pairs (default RUN_DIR/duplicates.csv; groups beside it)")

    s_ = sub.add_parser("sample", help="representatives of every cluster: the images nearest its centroid",
                        description="For each cluster, the --per-cluster images nearest its centroid and, with "
                                    "--spread N, N more spread over the cluster (farthest points), as a table and "
                                    "optionally a folder per cluster.")
    _add_run(s_)
    s_.add_argument("--per-cluster", type=int, default=5, help="central images per cluster (default 5)")
    s_.add_argument("--spread", type=int, default=0, help="spread images per cluster besides (default 0)")
    s_.add_argument("--out", metavar="FILE", help="the table (default RUN_DIR/representatives.csv)")
    s_.add_argument("--folders", metavar="DIR", help="also one folder per cluster of its representatives")
    s_.add_argument("--copy", action="store_true", help="with --folders: copies instead of links")
    return d, s_


def _add_groups(p: argparse.ArgumentParser) -> None:
    """--clusters K|auto and --grouping: other groups than the training's, drawn from the run's final features."""
    p.add_argument("--clusters", metavar="K|auto",
                   help="show K groups instead of the training's clusters, drawn from the run's final features "
                        "without training again (kept in RUN_DIR/groups for next time); 'auto' estimates K from "
                        "the features (silhouette of the tree's cuts) and prints the curve")
    p.add_argument("--grouping", default="kmeans", choices=("kmeans", "tree"),
                   help="how --clusters groups are drawn: kmeans (k-means at K, best of 10 starts; the training's "
                        "own clustering when K is its k) or tree (the run's tree of fine clusters merged by Ward "
                        "linkage, cut at K: groups at different K nest)")


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config.from_yaml(args.config) if args.config else Config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return dataclasses.replace(cfg, **given)
