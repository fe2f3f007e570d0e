"""Transfer by fine-tuning (the paper's Table 2 columns): on a labelled target dataset other than the training
data, train a fresh classifier head with either the fully connected layers only (``fc``, convs frozen with their
BatchNorm statistics) or every layer (``all``), then report top-1 on the target's test split. The given model is
not modified.

Targets: a folder with one subfolder per class (its test split another folder, or every fifth image held out),
or ``digits``: scikit-learn's 1,797 handwritten digits (8 x 8, 16 grey levels), installed with the package, so
a target is at hand offline."""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageFolder, TensorImages, draw_indices, load_size_for, open_folder
from ..data.adapt import for_network
from ..recipe import batch_size_for
from ..settings import ConfigError
from .closing import pixel_features
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


# How a fit runs, whatever the target's size: at most STEPS optimisation steps (the passes follow from the target's
# size and the batch), stopped early once the held-out part of the training split (HELD_OUT of it, stratified) has
# not improved its top-1 for PATIENCE passes, the weights of its best pass kept. Each mode tries its learning rates
# and keeps the one the held-out part prefers: ``fc`` trains two fc layers and a head on frozen convs; ``all`` moves
# every layer, and a step that suits a fresh head can wreck trained convs (at 0.01 the demo network fell to
# chance on the digits, 10 epochs of 6 steps). The test split chooses nothing: it scores the fit
# chosen, and the fresh head before any step (``start``).
STEPS = 1000
PATIENCE = 10
HELD_OUT = 0.1
LRS = {"fc": (0.01, 0.1), "all": (0.001, 0.01)}


def held_out(train_set, seed: int) -> tuple[object, object]:
    """``(fit, held-out)``: a seeded stratified tenth of ``train_set`` to choose the learning rate and the pass on;
    every class keeps an image in the fit part. ConfigError for fewer than two images per class."""
    y = np.asarray(train_set.targets)
    classes, first = np.unique(y, return_index=True)
    if len(y) < 2 * len(classes):
        raise ConfigError(f"the target's training images are {len(y)} for {len(classes)} classes: transfer needs "
                          f"at least two per class (one to fit, one to choose the learning rate on)")
    rest = np.setdiff1d(np.arange(len(y)), first)  # one image of each class is never held out
    held = rest[draw_indices(len(rest), max(1, min(len(rest), round(HELD_OUT * len(y)))), y[rest], seed)]
    return train_set.take(np.setdiff1d(np.arange(len(y)), held)), train_set.take(held)


def pixel_floor(train_set, test_set, image_size: int, workers: Optional[int] = 0) -> float:
    """Test top-1 of a linear classifier (multinomial logistic regression) on the pixels of the centre view,
    standardised, as the network reads them: what a transferred network should beat."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, x_test = (pixel_features(ds, image_size, workers) for ds in (train_set, test_set))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x, train_set.targets)
    return float((clf.predict(x_test) == np.asarray(test_set.targets)).mean())


def finetune(model, splits: tuple, image_size: int, device, mode: str = "fc", how: FitOptions = FitOptions(),
             steps: int = STEPS) -> dict:
    """Fine-tune copies of ``model`` on ``splits = (fit, held-out, test)`` in ``mode``, one per learning rate of
    :data:`LRS`; keep the one whose best pass scores highest on the held-out part. Returns its test ``top1``, its
    ``lr``, its ``held_out`` top-1, its best pass (``passes``), the passes ``made`` and whether it stopped
    ``early``, each lr ``tried`` with its held-out top-1, and ``start``: the network's test top-1 with the fresh
    head every fit starts from, before any step."""
    assert mode in MODES
    fit, held, test = splits
    device = torch.device(device)
    batch = min(how.batch_size, batch_size_for(len(fit)))
    passes = max(1, math.ceil(steps / math.ceil(len(fit) / batch)))
    tries = [_fit_once(model, splits, image_size, device, mode, replace(how, lr=lr, batch_size=batch, epochs=passes))
             for lr in LRS[mode]]
    best = max(tries, key=lambda t: t["held_out"])
    best["top1"] = classifier_accuracy(best.pop("model"), test, image_size, device, batch, how.workers)
    for t in tries:
        t.pop("model", None)
    start = classifier_accuracy(_with_fresh_head(model, splits, device, how.seed), test, image_size, device, batch,
                                how.workers)
    return best | {"tried": {str(t["lr"]): t["held_out"] for t in tries}, "start": start}


def _with_fresh_head(model, splits: tuple, device: torch.device, seed: int):
    """A copy of ``model`` with a fresh head for the target's classes, seeded: the same head every fit starts
    with."""
    torch.manual_seed(seed)
    m = copy.deepcopy(model).to(device)
    m.reset_head(int(max(s.targets.max() for s in splits)) + 1)
    return m


def _fit_once(model, splits: tuple, image_size: int, device: torch.device, mode: str, how: FitOptions) -> dict:
    """One fit of a copy of ``model`` with a fresh head at ``how.lr``, early-stopped on the held-out part."""
    fit, held, _ = splits
    m = _with_fresh_head(model, splits, device, how.seed)
    params = (list(m.classifier.parameters()) + list(m.head.parameters())) if mode == "fc" else list(m.parameters())
    kept = {"score": -1.0, "state": None, "passes": 0}

    def between(done: int) -> bool:  # score the pass just made, keep the best; then train / eval modes
        if done:
            score = classifier_accuracy(m, held, image_size, device, how.batch_size, how.workers)
            if score > kept["score"]:
                kept.update(score=score, state=copy.deepcopy(m.state_dict()), passes=done)
            if done - kept["passes"] >= PATIENCE:
                return True
        m.train()
        if mode == "fc":
            m.features.eval()  # frozen convs: BatchNorm keeps its statistics
        return False

    def loss(x, y):
        if mode == "fc":
            with torch.no_grad():
                body = torch.flatten(m.conv_body(x), 1)
            return F.cross_entropy(m.head(F.relu(m.classifier(body))), y)
        return F.cross_entropy(m(x), y)

    made = fit_on_views(loss, params, fit, image_size, device, how, f"transfer ({mode}, lr {how.lr:g})", between)
    m.load_state_dict(kept["state"])
    return {"model": m, "lr": how.lr, "held_out": kept["score"], "passes": kept["passes"], "made": made,
            "early": made < how.epochs}


def transfer(model, fresh, target: tuple, image_size: int, device, how: FitOptions = FitOptions(),
             steps: int = STEPS) -> dict:
    """The transfer protocol on ``target = (train, test)``: ``model`` fine-tuned in both modes (:func:`finetune`),
    beside the floors a transferred network should beat, measured on the same split: the same architecture trained
    from its random initialisation ``fresh`` on the target alone (``scratch``, every layer) and a linear
    classifier on the pixels (``pixels``). ``below`` lists the modes under the pixel floor."""
    train, test = target
    fit, held = held_out(train, how.seed)
    splits = (fit, held, test)
    fits = {mode: finetune(model, splits, image_size, device, mode, how, steps) for mode in MODES}
    fits["scratch"] = finetune(fresh, splits, image_size, device, "all", how, steps)
    pixels = pixel_floor(train, test, image_size, how.workers)
    return {**{name: f["top1"] for name, f in fits.items()}, "start": fits["fc"]["start"], "pixels": pixels,
            "below": [mode for mode in MODES if fits[mode]["top1"] < pixels], "fits": fits,
            "fit_images": len(fit), "held_out_images": len(held), "steps": steps}
