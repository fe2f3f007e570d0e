"""The trained network's features of any images, streamed to a ``.npy`` file (numpy memory-maps it; a million
images never sit in memory at once) with a CSV of the image names beside it (pandas reads it)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from ..evaluate.layers import check_layer, conv_grids, conv_shapes, pool, probe_dims_default
from ..features import dataset_features
from ..session import Images, open_run
from ..settings import ConfigError
from ..space import Space
from ..views import centre_input
from .assign import open_images
from .table import Output, Source, image_names, refuse_existing, run_clustering

SPACES = ("raw", "l2", "clustering")


def embed_images(source: Source, output: Output, layer: str = "fc", space: str = "raw") -> dict:
    """Write the features of ``source.data``'s images to ``output.out`` (``.npy``, float32 ``(N, D)``, row i =
    image i of the names file ``out`` with ``.csv``). ``layer``: ``fc`` (the output the run clusters) or ``conv<i>``
    (average-pooled as for the linear probes); ``space``: ``raw``, ``l2`` (rows L2-normalised) or ``clustering``
    (fc only: the run's clustering space, PCA-whitened + L2 for v1, the projections for v2)."""
    data, data_root, progress, overwrite = source.data, source.data_root, output.progress, output.overwrite
    if data is None or output.out is None:
        raise ConfigError("embed writes the features of given images to a file: give both (--data FOLDER --out "
                          "FILE.npy)")
    out = Path(output.out)
    if out.suffix != ".npy":
        raise ConfigError(f"{out}: the features are written as a .npy file; name it FILE.npy")
    if space not in SPACES:
        raise ConfigError(f"unknown feature space '{space}': choose one of {', '.join(SPACES)}")
    names_out = out.with_suffix(".csv")
    for p in (out, names_out):
        refuse_existing(p, overwrite)
    run = open_run(source.run_dir, source.device, Images(load=False))
    model, dev = run.model, run.device
    check_layer(model, layer)
    if space == "clustering" and layer != "fc":
        raise ConfigError("--space clustering is the space of the fc features: use --layer fc, or --space raw / l2")
    ds, note = open_images(run, data, data_root)
    model.eval()
    if layer == "fc":
        forward, dim = model.inference_embed(), model.feature_dim
    else:
        i = int(layer[4:])
        shapes = conv_shapes(model, ds.channels, model.image_size, dev)
        grid = conv_grids(shapes, probe_dims_default(model.image_size))[i - 1]
        forward, dim = (lambda x: pool(model.conv_outputs(x, upto=i)[-1], grid)), shapes[i - 1][0] * grid * grid
    project = None
    if space == "l2":
        project = lambda f: F.normalize(f, dim=1)
    elif space == "clustering":
        c = run_clustering(run)
        project = Space.of(c).on(model, dev)
        dim = len(c.centroids[0][0])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.npy")
    rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ds), dim))
    reading = run.reading("embed" if progress else None)
    dataset_features(forward, ds, np.arange(len(ds)), centre_input(model.image_size, ds.mean, ds.std), dev,
                     reading, project, rows)
    rows.flush()
    del rows
    names_tmp = names_out.with_name(f".{names_out.name}.tmp{os.getpid()}")
    with open(names_tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "image"])
        w.writerows(enumerate(image_names(ds)))
    os.replace(tmp, out)
    os.replace(names_tmp, names_out)
    return {"images": len(ds), "dim": int(dim), "layer": layer, "space": space, "features": str(out),
            "names": str(names_out), "note": note}
