"""DeepCluster must learn on real data with the defaults: the trained network's features beat the same network at
random initialisation and the pixels, on k-means NMI and on kNN, in the run's own closing evaluation. Fails when
learning breaks (a loss stuck at chance, a head that never trains, colour thrown away on colour photographs)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from deepcluster import Config, train
from deepcluster.diagnose import learning_problems

ROOT = Path(__file__).resolve().parents[1]


def photo_folder(root: Path) -> Path:
    spec = importlib.util.spec_from_file_location("photo_folder", ROOT / "scripts" / "photo_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_photo_folder(root, per_class=80)


@pytest.fixture(scope="session")
def letters(tmp_path_factory) -> Path:
    """glyphs-10 of the benchmark (benchmarks/folders.py): the letters a-j in 106 Latin fonts, 60 each, grey 28 px;
    a held-out folder, never used to choose a rule of the recipe."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from folders import build

    return build("glyphs-10", tmp_path_factory.mktemp("benchmark"))


def best(evaluation: dict, features: str, score: str = "nmi") -> float:
    return max(r[score] for r in evaluation["results"] if r["features"] == features)


def knn(evaluation: dict) -> dict:
    """features -> their best layer's kNN top-1"""
    out: dict = {}
    for r in evaluation["knn"]["results"]:
        out[r["features"]] = max(out.get(r["features"], 0), r["top1"])
    return out


@pytest.mark.slow
def test_the_defaults_learn_on_a_folder_of_colour_photographs(tmp_path):
    # 800 crops of 10 photographs and textures, 40-160 px, JPEG and PNG, RGB, grey and RGBA: the defaults, but 10
    # epochs of the 20 to keep the test short (about 80 s)
    data = photo_folder(tmp_path / "photos")
    summary = train(Config(data=str(data), epochs=10, device="cpu", report=False), tmp_path / "run", quiet=True)
    ev, rows = summary["eval"], summary["metrics"]
    # the recipe saw colour photographs: no Sobel, enough steps between clusterings for the fresh head
    cfg = Config.from_yaml(tmp_path / "run" / "config.yaml")
    assert cfg.sobel is False and cfg.reassign * 800 / cfg.batch_size >= 100
    # the loss leaves chance (ln 10 = 2.30) and the pseudo-labels settle
    assert rows[-1]["loss"] < 0.5 * 2.303 and rows[-1]["nmi_prev"] > 0.6
    # k-means NMI (trained, best pre-processing) well above the random network and every pixel baseline
    # (measured, 10 epochs: 0.681 and 0.637 with seeds 31 and 7, against at most 0.448 and 0.470)
    assert best(ev, "trained") > max(best(ev, "random-init"), best(ev, "pixels")) + 0.08
    k = knn(ev)  # measured (best layer, conv5): 0.850-0.868 against at most 0.735 and 0.415
    assert k["trained"] > max(k["random-init"], k["pixels"]) + 0.05
    assert learning_problems(rows, ev) == []


@pytest.mark.slow
def test_the_defaults_learn_on_a_fashion_mnist_subset(tmp_path):
    # 2,000 training images with the defaults (batch 128, 8 passes between clusterings; 10 epochs of the 20), scored
    # on the 10,000 test images against the same network at random initialisation and the pixels of the same run
    # the first 2,000 (Fashion-MNIST's files are in random order), the images the figures below were measured on
    summary = train(Config(data="fashion-mnist", subset=2000, subset_draw="first", epochs=10, device="cpu",
                           report=False), tmp_path / "run", quiet=True)
    ev, rows = summary["eval"], summary["metrics"]
    assert ev["split"] == "fashion-mnist/test" and ev["knn"]["database"] == "fashion-mnist/train"
    # measured: the loss falls from 2.28 to 0.70-1.14, the pseudo-labels' NMI (labels) from 0.13-0.30 to 0.59-0.63
    assert max(r["loss"] for r in rows[-4:]) < 0.6 * 2.303
    assert rows[-1]["nmi_labels"] > rows[0]["nmi_labels"] + 0.15
    # measured with seeds 31 and 32, the extraction in fp32 and in bf16 (the default on CPUs that multiply bf16
    # in hardware): NMI trained 0.591-0.622, random-init 0.544-0.567, pixels (L2) 0.608; accuracy trained
    # 0.615-0.681, pixels 0.536. On NMI this much data leaves the pixels level with the trained network (seed 32
    # in fp32 is 0.017 under them), so the pixels are beaten on accuracy, the random network on NMI.
    assert best(ev, "trained") > best(ev, "random-init") + 0.025
    assert best(ev, "trained", "acc") > best(ev, "pixels", "acc") + 0.05


@pytest.mark.slow
@pytest.mark.parametrize("extract", ["fp32", "int8"])
def test_the_defaults_learn_on_a_held_out_folder_of_letters(letters, tmp_path, extract):
    # 600 letters in 106 fonts, all defaults (about 100 s), the clustering passes in fp32 or (epochs 2-20) in int8
    if extract == "int8" and "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("int8 extraction needs PyTorch's x86 quantised kernels")
    summary = train(Config(data=str(letters), device="cpu", report=False, extract_precision=extract, eval_seeds=1),
                    tmp_path / "run", quiet=True)
    ev = summary["eval"]
    # measured (benchmarks/learning.py --folders glyphs-10 -- --extract-precision fp32 | int8, seeds 0 and 1):
    # NMI trained 0.521 / 0.520 (spread 0.017 / 0.026) against at most 0.350 (pixels); kNN 0.787 / 0.856 (spread
    # 0.012 / 0.008) against at most 0.758. The NMI threshold lies over twice the spread below the worse seed;
    # the kNN one (the best baseline itself) 0.023 below fp32's worse seed, about twice its spread.
    assert best(ev, "trained") > max(best(ev, "random-init"), best(ev, "pixels")) + 0.10
    k = knn(ev)
    assert k["trained"] > max(k["random-init"], k["pixels"])
