"""Transfer by fine-tuning (the paper's Table 2 columns): on a labelled target dataset other than the training
data, train a fresh classifier head with either the fully connected layers only (``fc``, convs frozen with their
BatchNorm statistics) or every layer (``all``), then report top-1 on the target's test split. The given model is
not modified.

Targets: a folder with one subfolder per class (its test split another folder, or every fifth image held out),
or ``digits``: scikit-learn's 1,797 handwritten digits (8 x 8, 16 grey levels), installed with the package, so
a target is at hand offline."""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageFolder, TensorImages, load_size_for, open_folder
from ..data.adapt import for_network
from ..settings import ConfigError
from .fit import FitOptions, classifier_accuracy, fit_on_views

MODES = ("fc", "all")
DIGITS_TRAIN = 1347  # scikit-learn's digits: the first 1,347 for training, the last 450 for testing


def digits(size: int) -> tuple[TensorImages, TensorImages]:
    """scikit-learn's handwritten digits, grey, scaled up to ``size`` px (bilinear): ``(train, test)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255 / 16))[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = x.to(torch.uint8)
    y, classes = d.target.astype(np.int64), tuple(str(c) for c in range(10))
    make = lambda s, name: TensorImages(x[s].contiguous(), y[s], classes, (0.5,), (0.5,), name)
    return make(slice(0, DIGITS_TRAIN), "digits (train)"), make(slice(DIGITS_TRAIN, None), "digits (test)")


def target_datasets(data: Optional[str], val_data: Optional[str], image_size: int, channels: int, mean, std,
                    training_data: str) -> tuple[object, object, dict]:
    """The target's ``(train, test, facts)`` as the network reads them (its channels and normalisation; the
    facts say what was converted and how the test split was made)."""
    if not data:
        raise ConfigError("transfer fine-tunes on another labelled dataset: give --target-data FOLDER (one "
                          "subfolder per class) or --target-data digits (scikit-learn's digits, installed offline)")
    if data == training_data:
        raise ConfigError(f"--target-data {data} is the data the network was trained on: transfer is measured on "
                          f"another dataset (fine-tuning on the training data is the probe's job)")
    if data == "digits":
        train, test = digits(load_size_for(image_size))
        split = "scikit-learn's split: the first 1,347 images for training, the last 450 for testing"
    elif val_data:
        train, test = open_folder(data, load_size_for(image_size)), open_folder(val_data, load_size_for(image_size))
        split = f"test images: {val_data}"
    else:
        whole = open_folder(data, load_size_for(image_size))
        train, test = _every_fifth(whole)
        split = "every fifth image (in file order) held out for testing"
    for ds, which in ((train, "training"), (test, "test")):
        if ds.targets is None:
            raise ConfigError(f"the target {which} images {ds.name} have no labels: put them in one subfolder "
                              f"per class")
    train, note = for_network(train, channels, mean, std)
    test, _ = for_network(test, channels, mean, std)
    return train, test, {"target": str(data), "split": split, "converted": note}


def _every_fifth(ds: ImageFolder) -> tuple[ImageFolder, ImageFolder]:
    """The folder split in two: every fifth file (0, 5, 10, ...) for testing, the rest for training."""
    return ds.take(i for i in range(len(ds)) if i % 5), ds.take(range(0, len(ds), 5))


def finetune(model, train_set, test_set, image_size: int, device, mode: str = "fc",
             how: FitOptions = FitOptions()) -> dict:
    """Fine-tune a copy of ``model`` on ``train_set``'s labels as ``how`` says; return ``{"top1": its top-1 on
    test_set, "start": the same network's top-1 with its fresh head, before any step}``."""
    assert mode in MODES
    device = torch.device(device)
    batch_size, workers = how.batch_size, how.workers
    torch.manual_seed(how.seed)
    m = copy.deepcopy(model).to(device)
    n_classes = int(max(train_set.targets.max(), test_set.targets.max())) + 1
    m.reset_head(n_classes)
    start = classifier_accuracy(m, test_set, image_size, device, batch_size, workers)
    params = (list(m.classifier.parameters()) + list(m.head.parameters())) if mode == "fc" else list(m.parameters())

    def modes():
        m.train()
        if mode == "fc":
            m.features.eval()  # frozen convs: BatchNorm keeps its statistics

    def loss(x, y):
        if mode == "fc":
            with torch.no_grad():
                body = torch.flatten(m.conv_body(x), 1)
            return F.cross_entropy(m.head(F.relu(m.classifier(body))), y)
        return F.cross_entropy(m(x), y)

    fit_on_views(loss, params, train_set, image_size, device, how, f"transfer ({mode})", modes)
    return {"top1": classifier_accuracy(m, test_set, image_size, device, batch_size, workers), "start": start}
