"""The auto recipe's rules, each on its own, and how a recipe meets the settings a user gives."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from deepcluster import Config, TensorImages
from deepcluster.diagnose import NMI_SPREAD, chance_loss, learning_problems
from deepcluster.evaluate.clustering import kmeans_quality
from deepcluster.preprocess import PCAWhitening, l2_normalize
from deepcluster.recipe import (
    MIN_STEPS_PER_CLUSTERING,
    PAPER,
    RECIPE_FIELDS,
    DataProfile,
    auto_settings,
    batch_size_for,
    describe,
    is_colour,
    k_for,
    pca_dim_for,
    profile,
    reassign_for,
    resolve,
    take_saved,
)
from deepcluster.session import training_images


@pytest.mark.parametrize("n,batch", [(100, 32), (400, 32), (800, 64), (1600, 128), (3000, 128), (3072, 256),
                                     (60000, 256), (1_281_167, 256)])
def test_batch_size_grows_with_the_data_up_to_the_papers(n, batch):
    assert batch_size_for(n) == batch


@pytest.mark.parametrize("n,batch", [(800, 64), (400, 32), (3000, 128), (20000, 256), (60000, 256)])
def test_every_clustering_is_followed_by_enough_steps_and_large_data_keeps_one_pass(n, batch):
    r = reassign_for(n, batch)
    steps = r * n / batch
    assert steps >= MIN_STEPS_PER_CLUSTERING
    assert r == 1 or (r - 1) * n / batch < MIN_STEPS_PER_CLUSTERING  # no more passes than needed
    assert (r == 1) == (n / batch >= MIN_STEPS_PER_CLUSTERING)


def test_k_is_ten_on_small_data_and_the_papers_over_clustering_at_imagenet_scale():
    assert [k_for(n) for n in (36, 800, 60000, 100_000)] == [10, 10, 10, 10]
    assert [k_for(n) for n in (2, 5, 12)] == [2, 2, 6]  # never more clusters than k-means can fill
    assert k_for(1_281_167) == 10000 and 10 < k_for(200_000) < 10000


def test_k_has_no_cliff_at_any_size():
    # one image more never adds more than one cluster, and more images never fewer clusters
    n = np.unique(np.geomspace(2, 5_000_000, 4000).astype(int))
    k = np.array([k_for(int(i)) for i in n])
    step = np.array([k_for(int(i) + 1) for i in n]) - k
    assert (np.diff(k) >= 0).all() and step.min() >= 0 and step.max() <= 1


def test_a_small_folders_whitening_keeps_its_groups():
    # Three groups in 8 of 508 directions, low-variance noise in the rest, 300 points: whitening the whole span
    # (256 dims, as the paper's fixed 256 would) gives the noise the groups' variance and k-means finds nothing;
    # the recipe's at most one dimension per 25 images keeps them.
    rng = np.random.default_rng(0)
    n, y = 300, np.arange(300) % 3
    x = np.concatenate([(rng.normal(size=(3, 8)) * 3)[y] + rng.normal(size=(n, 8)), rng.normal(size=(n, 500)) * 0.3],
                       axis=1) @ np.linalg.qr(rng.normal(size=(508, 508)))[0]
    nmi = {d: kmeans_quality(l2_normalize(PCAWhitening(d).fit_transform(x)), y, seeds=1)["nmi"]
           for d in (256, pca_dim_for(n))}
    assert pca_dim_for(n) == 12 and nmi[12] > 0.95 and nmi[256] < 0.1
    assert [pca_dim_for(n) for n in (40, 1000, 6400, 60000)] == [8, 40, 256, 256]


def test_colour_is_read_from_the_pixels_not_the_storage():
    rng = np.random.default_rng(0)
    grey = torch.from_numpy(rng.integers(0, 256, (1, 16, 16), dtype=np.uint8)).repeat(3, 1, 1)
    noisy_grey = (grey.int() + torch.from_numpy(rng.integers(-2, 3, (3, 16, 16)))).clamp(0, 255).to(torch.uint8)
    colour = torch.from_numpy(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8))
    assert not is_colour(grey) and not is_colour(noisy_grey) and is_colour(colour)
    data = TensorImages(grey[None].repeat(5, 1, 1, 1))  # grey pictures stored as RGB
    assert profile(data) == DataProfile(5, 16, False)
    data.images[3] = colour
    assert profile(data).colour


def test_profile_of_a_folder_uses_the_files_sizes_and_colours(image_folder):
    cfg = Config(data=str(image_folder))
    p = profile(training_images(cfg))
    # 36 images, 27 of 32 px and 9 of 40 px; the stripes and disks are coloured
    assert p == DataProfile(36, 32, True)


def test_auto_settings_follow_the_datas_size_and_colour():
    small_colour = auto_settings(DataProfile(800, 96, True))
    assert small_colour == {"arch": "small", "sobel": False, "k": 10, "pca_dim": 32, "epochs": 20,
                            "batch_size": 64, "reassign": 10.0, "lr": 0.01, "lr_schedule": "cosine",
                            "crop_scale": 0.25}
    fmnist = auto_settings(DataProfile(60000, 28, False))
    assert fmnist["sobel"] and fmnist["reassign"] == 1 and fmnist["batch_size"] == 256 and fmnist["k"] == 10
    imagenet = auto_settings(DataProfile(1_281_167, 375, True))
    assert imagenet["arch"] == "alexnet" and imagenet["k"] == 10000 and imagenet["lr"] == 0.05
    assert imagenet["sobel"]  # the paper's, on colour images
    # many small images stay on the small network
    assert auto_settings(DataProfile(1_000_000, 32, True))["arch"] == "small"
    assert set(small_colour) == set(RECIPE_FIELDS) == set(PAPER)


def test_a_given_setting_always_wins_over_the_recipe():
    p = DataProfile(800, 96, True)
    cfg = resolve(Config(data="x", k=37, sobel=True, lr=0.2), p)
    assert (cfg.k, cfg.sobel, cfg.lr) == (37, True, 0.2)
    assert cfg.batch_size == 64 and cfg.reassign == 10.0  # the rest is the recipe's
    paper = resolve(Config(data="x", recipe="paper", epochs=3))
    assert paper.epochs == 3 and {f: getattr(paper, f) for f in RECIPE_FIELDS if f != "epochs"} == \
        {f: v for f, v in PAPER.items() if f != "epochs"}
    with pytest.raises(ValueError, match="profile"):
        resolve(Config(data="x"))  # auto, and nothing to look at
    line = describe(Config(data="x", k=37), cfg, p)
    assert line.startswith("recipe auto for 800 colour images of about 96 px:") and "k 37" not in line
    assert "batch_size 64" in line and "reassign 10.0" in line


def test_a_resumed_run_keeps_the_settings_it_was_trained_with():
    saved = resolve(Config(data="x"), DataProfile(800, 96, True))
    again = take_saved(Config(data="x", epochs=20), saved)
    assert again.epochs == 20 and again.batch_size == 64 and again.lr == saved.lr
    assert resolve(again, DataProfile(5000, 96, False)) == again  # nothing left for today's recipe to change


def test_the_command_line_leaves_unset_settings_to_the_recipe():
    from deepcluster.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", "--data", "x", "--out", "y", "--k", "5",
                                                      "--no-sobel"]))
    assert cfg.k == 5 and cfg.sobel is False and cfg.recipe == "auto"
    assert all(getattr(cfg, f) is None for f in RECIPE_FIELDS if f not in ("k", "sobel"))


# ---- a run that does not learn says so

def epochs(losses, prev, clusters=100):
    return [{"epoch": i + 1, "loss": loss, "clusters": clusters, "nmi_prev": p} for i, (loss, p) in
            enumerate(zip(losses, prev))]


def table(trained, pixels):
    return {"results": [{"features": "trained", "preprocessing": "L2", "nmi": trained},
                        {"features": "random-init", "preprocessing": "L2", "nmi": 0.2},
                        {"features": "pixels", "preprocessing": "raw", "nmi": pixels}]}


def test_a_run_that_learned_gets_no_warning():
    assert learning_problems(epochs([2.0, 1.1, 0.8, 0.6], [None, 0.5, 0.7, 0.85]), table(0.7, 0.5)) == []


def test_a_loss_at_chance_is_named_with_what_to_change():
    ln100 = math.log(100)
    (msg,) = learning_problems(epochs([ln100, ln100 - 0.001, ln100], [None, 0.8, 0.8]))
    assert "stayed at chance" in msg and "4.605" in msg and "--reassign" in msg


def test_wandering_pseudo_labels_are_named():
    (msg,) = learning_problems(epochs([1.0, 0.9, 0.8, 0.7], [None, 0.3, 0.35, 0.4]))
    assert "keep changing" in msg and "0.40" in msg and "--lr" in msg


def test_trained_features_below_a_baseline_are_named():
    (msg,) = learning_problems(epochs([1.0, 0.9, 0.8], [None, 0.8, 0.9]), table(0.40, 0.63))
    assert "worse than pixels (raw)" in msg and "0.400 against 0.630" in msg


def test_knn_below_a_baseline_is_named():
    rows = [("trained", "fc", 0.766), ("trained", "conv5", 0.80), ("random-init", "fc", 0.844),
            ("random-init", "conv5", 0.83), ("pixels", "raw", 0.70)]
    ev = {"knn": {"results": [{"features": f, "layer": layer, "top1": v} for f, layer, v in rows]}}
    (msg,) = learning_problems([], ev)
    assert "best kNN accuracy (conv5: 0.800) is below that of random-init fc (0.844)" in msg and "pixels" not in msg
    ev["knn"]["results"][1]["top1"] = 0.85  # ahead of them all, by less than a seed moves it: a tie
    (msg,) = learning_problems([], ev)
    assert "(conv5: 0.850) is no better than that of random-init fc (0.844)" in msg
    ev["knn"]["results"][1]["top1"] = 0.90  # ahead by more
    assert learning_problems([], ev) == []


def test_a_tie_with_a_baseline_is_named_as_one():
    learned = epochs([1.0, 0.9, 0.8], [None, 0.8, 0.9])
    (msg,) = learning_problems(learned, table(0.66, 0.63))
    assert "cluster no better than pixels (raw)" in msg and "0.660 against 0.630" in msg
    assert learning_problems(learned, table(0.63 + NMI_SPREAD + 0.01, 0.63)) == []


def test_unequal_clusters_are_named():
    rows = epochs([1.0, 0.9, 0.8], [None, 0.8, 0.9], clusters=10)
    assert learning_problems(rows) == []
    rows[-1]["imbalance"] = 4.2
    (msg,) = learning_problems(rows)
    assert "very unequal (imbalance 4.2" in msg and "--k" in msg


def test_chance_with_several_heads_is_the_mean_of_their_ln_k():
    # a 10-cluster head at loss 1.2 (chance ln 10 = 2.30) beside a 100-cluster one at 3.0 (chance 4.61): both
    # learned; their mean 2.1 is far from the mean chance 3.45, but would be "chance" against ln 10 alone
    row = {"epoch": 3, "loss": 2.1, "clusters": 10, "heads": [10, 100], "nmi_prev": 0.9}
    assert chance_loss(row) == pytest.approx((math.log(10) + math.log(100)) / 2)
    assert learning_problems([row]) == []
    (msg,) = learning_problems([{**row, "loss": 3.4}])
    assert "stayed at chance" in msg


def test_the_supervised_baseline_is_judged_on_its_table_only():
    sup = [{"epoch": 1, "loss": 9.0, "time_training": 1.0}]
    assert learning_problems(sup) == [] and len(learning_problems(sup, table(0.1, 0.5))) == 1


def test_the_summary_prints_the_warnings(tiny_config, tmp_path, capsys):
    from deepcluster import train

    # two epochs of 3 steps at a tiny learning rate: the loss stays at ln k
    summary = train(dataclasses.replace(tiny_config, lr=1e-5, epochs=2), tmp_path / "run")
    out = capsys.readouterr().out
    assert learning_problems(summary["metrics"], summary["eval"])
    assert "warning: the training loss stayed at chance" in out
