"""DeepCluster must learn on real data with the defaults: the trained network's features beat the same network at
random initialisation and the pixels, on k-means NMI and on kNN, in the run's own closing evaluation. Fails when
learning breaks (a loss stuck at chance, a head that never trains, colour thrown away on colour photographs)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deepcluster import Config, train
from deepcluster.diagnose import learning_problems

ROOT = Path(__file__).resolve().parents[1]


def photo_folder(root: Path) -> Path:
    spec = importlib.util.spec_from_file_location("photo_folder", ROOT / "scripts" / "photo_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_photo_folder(root, per_class=80)


def best(evaluation: dict, features: str) -> float:
    return max(r["nmi"] for r in evaluation["results"] if r["features"] == features)


def knn(evaluation: dict) -> dict:
    return {r["features"]: r["top1"] for r in evaluation["knn"]["results"]}


@pytest.mark.slow
def test_the_defaults_learn_on_a_folder_of_colour_photographs(tmp_path):
    # 800 crops of 10 photographs and textures, 40-160 px, JPEG and PNG, RGB, grey and RGBA: the defaults alone
    data = photo_folder(tmp_path / "photos")
    summary = train(Config(data=str(data), device="cpu", report=False), tmp_path / "run", quiet=True)
    ev, rows = summary["eval"], summary["metrics"]
    # the recipe saw colour photographs: no Sobel, enough steps between clusterings for the fresh head
    cfg = Config.from_yaml(tmp_path / "run" / "config.yaml")
    assert cfg.sobel is False and cfg.reassign * 800 / cfg.batch_size >= 100
    # the loss leaves chance (ln 10 = 2.30) and the pseudo-labels settle
    assert rows[-1]["loss"] < 0.5 * 2.303 and rows[-1]["nmi_prev"] > 0.6
    # k-means NMI (trained, best pre-processing) well above the random network and every pixel baseline
    # (measured: 0.62-0.73 against at most 0.45 and 0.47)
    assert best(ev, "trained") > max(best(ev, "random-init"), best(ev, "pixels")) + 0.08
    k = knn(ev)
    assert k["trained"] > max(k["random-init"], k["pixels"]) + 0.03
    assert learning_problems(rows, ev) == []
