"""The paper's evaluation protocols on a trained (or randomly initialised) network, each returning a dict.

``load_for_eval`` turns a run directory or checkpoint into the network and its datasets; ``run_protocol`` runs
one protocol of the registry :data:`PROTOCOLS` by name, with its options (:class:`EvalOptions`). Both the
``deepcluster eval`` command and the Python API use them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..data.adapt import Format
from ..features import Reading
from ..network import saved_network
from ..preprocess import l2_normalize, preprocess_features
from ..session import Images, SavedRun, open_run
from ..settings import ConfigError
from .clustering import kmeans_quality
from .fit import FitOptions, classifier_accuracy
from .knn import knn_accuracy
from .layers import check_layer, conv_shapes, layer_features
from .metrics import ari, nmi
from .probe import linear_probes
from .retrieval import RegionWhitening, mean_average_precision, regional_max, rmac_descriptors, rmac_regions
from .transfer import STEPS, target_datasets, transfer


@dataclass(frozen=True)
class EvalOptions:
    """The protocols' options, as ``deepcluster eval`` takes them; each protocol reads its own (``Protocol.reads``)
    and leaves the others."""
    epochs: int = 10
    layer: Optional[str] = None
    knn_k: int = 20
    target_data: Optional[str] = None
    target_val_data: Optional[str] = None
    queries: int = 1000
    seeds: int = 3
    progress: bool = True
    views: str = "auto"
    images: Optional[str] = None
    ground_truth: Optional[str] = None
    gt_protocol: str = "medium"
    whiten_data: Optional[str] = None
    max_size: Optional[int] = None
    steps: Optional[int] = None


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: ``run(saved run, options)`` gives its metrics; ``labelled``: the splits whose labels
    it needs ("training", "test"); ``reads``: the options it uses; ``needs``: the option without which ``eval all``
    skips it; ``help``: one line for the command line."""
    run: Callable[[SavedRun, EvalOptions], dict]
    labelled: tuple[str, ...]
    reads: tuple[str, ...]
    help: str
    needs: Optional[str] = None


def load_for_eval(path: str | Path, data: Optional[str] = None, val_data: Optional[str] = None,
                  data_root: Optional[str] = None, random_init: bool = False, device: str = "auto",
                  load_data: bool = True) -> SavedRun:
    """A run directory (its ``checkpoint.pt``) or a checkpoint file -> the network and the datasets to evaluate
    on: every image of the run's own data, unless ``data``/``val_data`` name others. ``random_init`` keeps the
    architecture and seed but not the learned weights: the "random" row of the tables. Without ``load_data`` no
    dataset is opened (a protocol that reads images of its own)."""
    return open_run(path, device, Images(data, val_data, data_root, load=load_data), random_init)


def _need_labels(ds, protocol: str, which: str) -> None:
    if ds is None:
        raise ConfigError(f"'{protocol}' needs a labelled test split: pass --val-data FOLDER (one subfolder per "
                          f"class)")
    if ds.targets is None:
        raise ConfigError(f"'{protocol}' needs labels, and the {which} images {ds.name} have none: put them in one "
                          f"subfolder per class")


def run_protocol(name: str, s: SavedRun, **options) -> dict:
    """Run the protocol ``name`` of :data:`PROTOCOLS` on ``s`` with ``options`` (:class:`EvalOptions`' fields);
    return its metrics. An unknown protocol or option is refused with one line."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{name}': choose one of {', '.join(PROTOCOLS)}")
    unknown = sorted(set(options) - {f.name for f in fields(EvalOptions)})
    if unknown:
        raise ConfigError(f"no protocol option {', '.join(unknown)}: the options are "
                          f"{', '.join(f.name for f in fields(EvalOptions))}")
    protocol = PROTOCOLS[name]
    for which in protocol.labelled:
        _need_labels(s.train_set if which == "training" else s.test_set, name, which)
    return {"protocol": name, "random_init": s.random_init, "arch": s.cfg.arch} | protocol.run(
        s, EvalOptions(**options))


def _desc(o: EvalOptions, text: str) -> Optional[str]:
    return text if o.progress else None


def _reading(s: SavedRun, o: EvalOptions, desc: str) -> Reading:
    """How a protocol reads images: the run's batch size and workers, float32."""
    return Reading(s.cfg.batch_size, s.cfg.workers, desc=_desc(o, desc))


def _fitting(s: SavedRun, o: EvalOptions) -> FitOptions:
    """How a protocol fits on labels: ``o.epochs`` at the default lr, the run's batch size, crops, seed, workers."""
    cfg = s.cfg
    return FitOptions(o.epochs, batch_size=cfg.batch_size, crop_scale=cfg.crop_scale, seed=cfg.seed,
                      workers=cfg.workers, progress=o.progress)


def _probe(s: SavedRun, o: EvalOptions) -> dict:
    cfg = s.cfg
    out = linear_probes(s.model, s.train_set, s.test_set, s.image_size, s.device, _fitting(s, o), views=o.views)
    if cfg.supervised and not s.random_init:  # the ceiling a converged probe of its layers approaches
        out["network"] = classifier_accuracy(s.model, s.test_set, s.image_size, s.device, cfg.batch_size,
                                             cfg.workers)
    return out


def _knn(s: SavedRun, o: EvalOptions) -> dict:
    layer = o.layer or "fc"
    check_layer(s.model, layer)
    feats = [layer_features(s.model, ds, layer, s.image_size, s.device, _reading(s, o, f"knn {d}"))
             for ds, d in ((s.train_set, "train"), (s.test_set, "test"))]
    return {"layer": layer, "k": o.knn_k, "temperature": 0.07,
            "top1": knn_accuracy(feats[0], s.train_set.targets, feats[1], s.test_set.targets, o.knn_k)}


def _cluster(s: SavedRun, o: EvalOptions) -> dict:
    cfg, layer = s.cfg, o.layer or "fc"
    check_layer(s.model, layer)
    f = layer_features(s.model, s.test_set, layer, s.image_size, s.device, _reading(s, o, "cluster features"))
    y = s.test_set.targets
    out = {"layer": layer, "split": s.test_set.name,
           **kmeans_quality(preprocess_features(f, cfg.pca_dim), y, seeds=o.seeds, seed=cfg.seed)}
    # Whitening to pca_dim suits DeepCluster's own large-k clustering but can hurt a k = classes one
    # (docs/small-data.md): plain L2-normalised features are scored too.
    out["l2"] = kmeans_quality(l2_normalize(f), y, seeds=o.seeds, seed=cfg.seed)
    if s.assignment is not None and s.train_set.targets is not None and len(s.assignment) <= len(s.train_set):
        y = s.train_set.targets[:len(s.assignment)]
        out["pseudo_labels"] = {"nmi": nmi(y, s.assignment), "ari": ari(y, s.assignment),
                                "clusters": int(len(np.unique(s.assignment)))}
    return out


def _transfer(s: SavedRun, o: EvalOptions) -> dict:
    cfg = s.cfg
    train_t, test_t, facts = target_datasets(o.target_data, o.target_val_data, s.image_size, s.channels, s.mean,
                                             s.std, cfg.data)
    fresh = saved_network(s.state, s.image_size, s.channels, s.device, str(s.run_dir), random_init=True)
    out = transfer(s.model, fresh, (train_t, test_t), s.image_size, s.device, _fitting(s, o), o.steps or STEPS)
    return dict(facts, images=len(train_t), test_images=len(test_t), **out)


def _class_retrieval(s: SavedRun, o: EvalOptions) -> dict:
    return _retrieval(s, o.layer or f"conv{s.model.n_conv}", o.queries, o.progress)


def _sources(ds) -> list:
    """A dataset's images as :class:`~.instance.WholeImages` reads them: its files, or PIL images of its pixels."""
    from PIL import Image

    files = getattr(ds, "files", None)
    if files is not None:
        return list(files)
    x = ds.images.numpy()
    return [Image.fromarray(a[0] if len(a) == 1 else a.transpose(1, 2, 0)) for a in x]


def _instance(name: str, s: SavedRun, o: EvalOptions) -> dict:
    """Copy detection (on ``images``, default the run's test images, else its training images) or instance
    retrieval (``ground_truth`` over ``images``), R-MAC from ``layer`` at ``max_size``, the regional whitening
    fitted on ``whiten_data`` (default: 1,000 training images of the run, for copies only)."""
    from .instance import Reader, copy_detection, image_files, instance_retrieval, read_ground_truth, sample_files

    layer = o.layer or f"conv{s.model.n_conv}"
    check_layer(s.model, layer)
    if layer == "fc":
        raise ConfigError(f"{name} reads a conv layer's map (R-MAC): choose --layer conv1..conv{s.model.n_conv}")
    size = o.max_size or (1024 if s.image_size > 64 else 4 * s.image_size)
    reader = Reader(s.model, int(layer[4:]), size, Format(s.channels, s.mean, s.std), s.device, s.cfg.workers or 0,
                    o.progress)
    if o.whiten_data:
        whiten_from, whitened_on = sample_files(o.whiten_data, 1000, s.cfg.seed), str(o.whiten_data)
    elif name == "instance":
        raise ConfigError("instance retrieval learns its whitening on another image set: give --whiten-data FOLDER "
                          "(the paper's practice: Paris6k's images for Oxford5k, and the reverse)")
    else:
        train = _sources(s.train_set)
        pick = np.random.default_rng(s.cfg.seed).choice(len(train), min(1000, len(train)), replace=False)
        whiten_from, whitened_on = [train[i] for i in sorted(pick)], f"{s.train_set.name} ({len(pick)} training images)"
    out = {"layer": layer, "whitened_on": whitened_on}
    if name == "instance":
        if not o.ground_truth or not o.images:
            raise ConfigError("instance retrieval needs --ground-truth (the benchmark's text files or gnd_*.pkl) "
                              "and --images (its image folder)")
        return out | instance_retrieval(reader, o.images, read_ground_truth(o.ground_truth, o.gt_protocol),
                                        whiten_from)
    if o.images:
        database, out["database"] = image_files(o.images), str(o.images)
    else:
        ds = s.test_set if s.test_set is not None else s.train_set
        database, out["database"] = _sources(ds), ds.name
    return out | copy_detection(reader, database, whiten_from, o.queries, s.cfg.seed)


def _retrieval(s: SavedRun, layer: str, queries: int, progress: bool) -> dict:
    """R-MAC from a conv layer's map: regional vectors whitened with PCA learned on the *training* images; every
    one of the first ``queries`` test images is a query against the others (same label = relevant)."""
    from ..data import make_loader
    from ..features import extract_features
    from ..views import centre_input

    check_layer(s.model, layer)
    if layer == "fc":
        raise ConfigError("retrieval reads a conv layer's map (R-MAC): choose --layer conv1..conv"
                          f"{s.model.n_conv}")
    i = int(layer[4:])
    s.model.eval()
    channels, h, w = conv_shapes(s.model, s.train_set.channels, s.image_size, s.device)[i - 1]
    regions = rmac_regions(h, w)
    forward = lambda x: regional_max(s.model.conv_outputs(x, upto=i)[-1], regions).flatten(1)

    def regional(ds, n):  # (n, regions, channels): the regional max vectors of the first n images
        n = min(n, len(ds))
        loader = make_loader(ds, range(n), s.cfg.batch_size, s.cfg.workers)
        rows = extract_features(forward, loader, n, centre_input(s.image_size, ds.mean, ds.std), s.device, None)
        return rows.reshape(n, len(regions), channels)

    whitening = RegionWhitening().fit(regional(s.train_set, 2000))
    desc = rmac_descriptors(regional(s.test_set, queries), whitening)
    y = s.test_set.targets[:len(desc)]
    return {"layer": layer, "queries": len(desc), "map": mean_average_precision(desc, desc, y, y, exclude_self=True),
            "chance": float(np.mean([(np.sum(y == c) - 1) / (len(y) - 1) for c in y]))}


PROTOCOLS: dict[str, Protocol] = {
    "probe": Protocol(_probe, ("training", "test"), ("epochs", "views"), "linear probe on every conv layer"),
    "knn": Protocol(_knn, ("training", "test"), ("layer", "knn_k"), "weighted cosine kNN"),
    "cluster": Protocol(_cluster, ("test",), ("layer", "seeds"), "k-means with the true number of classes"),
    "transfer": Protocol(_transfer, (), ("target_data", "target_val_data", "steps"),
                         "fine-tune fc layers / all layers on another labelled dataset, beside the same network "
                         "trained there from scratch and a linear classifier on its pixels", needs="target_data"),
    "class-retrieval": Protocol(_class_retrieval, ("test",), ("layer", "queries"), "R-MAC mAP, same label = relevant"),
    "copies": Protocol(lambda s, o: _instance("copies", s, o), (), ("layer", "queries", "images", "whiten_data",
                                                                    "max_size"),
                       "R-MAC copy detection (strong copies of database images as queries)"),
    "instance": Protocol(lambda s, o: _instance("instance", s, o), (),
                         ("layer", "images", "ground_truth", "gt_protocol", "whiten_data", "max_size"),
                         "Oxford5k / Paris6k instance retrieval", needs="ground_truth"),
}


def result_name(protocol: str, random_init: bool) -> str:
    return f"eval/{protocol}{'-random' if random_init else ''}.json"
