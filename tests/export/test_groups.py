"""Groups drawn from a finished run without training again: any number K by k-means, the tree cut at K, nested
levels, and K estimated; each kept with the run, each refusal one line that writes nothing."""
from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from deepcluster import Config, DeepCluster, train
from deepcluster.cli import main
from deepcluster.features import Reading
from deepcluster.recipe import resolve
from deepcluster.session import Images, open_run
from deepcluster.space import embed


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run on 3 kinds x 12 images, trained with k = 6 (built here: conftest's folder is one per test)."""
    root = tmp_path_factory.mktemp("groups")
    rng = np.random.default_rng(0)
    for kind, name in enumerate(("disk", "hstripe", "vstripe")):
        (root / "images" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(make_image(kind, rng, 32)).save(root / "images" / name / f"{i:02d}.png")
    cfg = resolve(Config(data=str(root / "images"), recipe="paper", arch="small", image_size=32, k=6, epochs=2,
                         batch_size=16, pca_dim=16, eval_seeds=1, device="cpu"))
    train(cfg, root / "run", quiet=True)
    return root / "run"


def table(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def labels_of(path, column="cluster") -> np.ndarray:
    return np.array([int(r[column]) for r in table(path)])


def snapshot(run) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_the_run_keeps_its_final_features_the_space_its_clusters_live_in(finished):
    x = np.load(finished / "features.npy")
    run = open_run(finished, device="cpu", images=Images(whole=False))
    c = run.state.clustering
    assert x.shape == (36, 16)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)  # whitened, L2-normalised
    d2 = ((x[:, None].astype(np.float64) - c.centroids[0][None]) ** 2).sum(-1)
    assert np.array_equal(d2.argmin(1), c.labels[0])
    again = embed(run.model, run.train_set, c, run.device, Reading(run.cfg.batch_size, amp=run.dtype, desc=None))
    np.testing.assert_allclose(again, x, atol=1e-5)


def test_asking_for_the_training_k_gives_the_training_clustering(finished, capsys):
    assert main(["export", str(finished), "--clusters", "6"]) == 0
    out = capsys.readouterr().out
    assert "the training's own clustering (k = 6)" in out and "clusters-k6.csv" in out
    assert np.array_equal(labels_of(finished / "clusters-k6.csv"), np.load(finished / "assignments.npy"))


def test_any_k_is_drawn_by_kmeans_once_and_read_back(finished, capsys):
    assert main(["export", str(finished), "--clusters", "3", "--overwrite"]) == 0
    assert "k-means at K = 3" in capsys.readouterr().out
    kept = finished / "groups" / "kmeans-3.npz"
    first, stamp = labels_of(finished / "clusters-k3.csv"), kept.stat().st_mtime_ns
    assert sorted(set(first.tolist())) == [0, 1, 2]
    with np.load(kept) as f:  # k-means converged: each image is in its nearest centroid's group
        x = np.load(finished / "features.npy").astype(np.float64)
        assert np.array_equal(((x[:, None] - f["centroids"][None]) ** 2).sum(-1).argmin(1), first)
    # a second call reads the kept result: same groups, the file untouched; the training's clustering unchanged
    assert main(["export", str(finished), "--clusters", "3", "--overwrite"]) == 0
    assert np.array_equal(labels_of(finished / "clusters-k3.csv"), first) and kept.stat().st_mtime_ns == stamp
    assert np.array_equal(open_run(finished, device="cpu").state.clustering.labels[0],
                          np.load(finished / "assignments.npy"))


def test_the_tree_cut_and_levels_nest_and_agree_with_kmeans(finished, capsys):
    assert main(["export", str(finished), "--clusters", "3", "--grouping", "tree", "--levels", "2,3,9",
                 "--overwrite"]) == 0
    assert "the tree of 24 leaves cut at K = 3" in capsys.readouterr().out  # leaves: 4 sqrt(36), at least k
    path = finished / "clusters-tree-k3.csv"
    cut, level = labels_of(path), {k: labels_of(path, f"level_{k}") for k in (2, 3, 9)}
    assert np.array_equal(cut, level[3])
    for coarse, fine in ((2, 3), (3, 9)):  # each fine group lies inside one coarse group
        assert all(len(set(level[coarse][level[fine] == g])) == 1 for g in set(level[fine]))
    tree = np.load(finished / "groups" / "tree.npz")
    assert all(len(set(cut[tree["leaf_of"] == leaf])) == 1 for leaf in range(24))  # the cut keeps leaves whole


def test_auto_prints_its_curve_and_choice(finished, capsys):
    assert main(["export", str(finished), "--clusters", "auto", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "how many groups: silhouette" in out and "*" in out
    k = len(set(labels_of(finished / "clusters-auto.csv").tolist()))
    assert f"groups: K = {k} estimated by silhouette" in out
    assert (finished / "groups" / "auto-silhouette.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--clusters", "1"], "--clusters 1: ask for at least 2 groups"),
    (["--clusters", "37"], "--clusters 37: ask for 2 to 36 groups"),
    (["--clusters", "many"], "give a number of groups (e.g. 20) or 'auto'"),
    (["--clusters", "4", "--grouping", "tree", "--levels", "1,4"], "every level needs at least 2 groups"),
    (["--levels", "3,500"], "cuts into 2 to 24 groups"),
    (["--grouping", "tree"], "give --clusters K or auto too"),
])
def test_bad_requests_are_one_line_and_write_nothing(finished, capsys, args, message):
    before = snapshot(finished)
    assert main(["export", str(finished), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert snapshot(finished) == before


def test_a_run_without_final_features_says_how_to_get_them(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("features.npy", "groups", "clusters-*"))
    before = snapshot(run)
    assert main(["export", str(run), "--clusters", "4"]) == 2
    err = capsys.readouterr().err
    assert "no final features" in err and "--resume" in err and snapshot(run) == before
    # resuming the finished run writes them, and then the groups can be drawn
    cfg = open_run(run, device="cpu", images=Images(load=False)).cfg
    train(dataclasses.replace(cfg), run, resume=True, quiet=True)
    np.testing.assert_allclose(np.load(run / "features.npy"), np.load(finished / "features.npy"), atol=1e-5)
    assert main(["export", str(run), "--clusters", "4"]) == 0


def test_auto_refuses_a_handful_of_images(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i in range(12):
        (tmp_path / "few" / f"k{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_image(i % 3, rng, 32)).save(tmp_path / "few" / f"k{i % 3}" / f"{i:02d}.png")
    cfg = resolve(Config(data=str(tmp_path / "few"), recipe="paper", arch="small", image_size=32, k=3, epochs=1,
                         batch_size=8, pca_dim=4, eval_seeds=1, device="cpu"))
    train(cfg, tmp_path / "small", quiet=True)
    before = snapshot(tmp_path / "small")
    assert main(["export", str(tmp_path / "small"), "--clusters", "auto"]) == 2
    assert "--clusters auto needs at least 20 images" in capsys.readouterr().err
    assert snapshot(tmp_path / "small") == before


def test_the_estimator_takes_the_groups_asked_for(finished):
    est = DeepCluster.load(finished, device="cpu", clusters=3)
    assert est.get_params()["clusters"] == 3 and est.groups_.how == "kmeans"
    with np.load(finished / "groups" / "kmeans-3.npz") as kept:
        assert np.array_equal(est.labels_, kept["labels"]) and est.cluster_centers_.shape == (3, 16)
    assert np.array_equal(est.predict(finished.parent / "images"), est.labels_)
    own = DeepCluster.load(finished, device="cpu")
    assert own.groups_.how == "training" and np.array_equal(own.labels_, np.load(finished / "assignments.npy"))


def test_a_refused_command_computes_nothing(finished, capsys):
    """The other commands check their outputs before drawing the groups: a refusal leaves no kept result."""
    assert main(["sample", str(finished), "--per-cluster", "1", "--spread", "0", "--device", "cpu"]) == 0
    before = snapshot(finished)
    assert main(["sample", str(finished), "--clusters", "5", "--device", "cpu"]) == 2
    assert "exists" in capsys.readouterr().err
    assert snapshot(finished) == before and not (finished / "groups" / "kmeans-5.npz").exists()
    assert main(["sample", str(finished), "--clusters", "5", "--device", "cpu", "--out",
                 str(finished.parent / "reps.csv")]) == 0
    assert "groups: k-means at K = 5" in capsys.readouterr().out


def test_a_large_runs_tree_takes_its_own_clustering_as_leaves(tmp_path):
    from deepcluster.export.groups import RunGroups
    from deepcluster.rundir import FEATURES
    from deepcluster.state import RunClustering

    x = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    np.save(tmp_path / FEATURES, x)
    labels = np.arange(400) % 80  # k = 80 = 4 sqrt(400): the rule's leaves are as many as the training's clusters
    own = RunClustering("whitened", [np.zeros((80, 8), np.float32)], [labels], [np.zeros(400, np.float32)])
    tree = RunGroups(tmp_path, own, 80).tree()
    assert tree.leaves == 80 and np.array_equal(tree.leaf_of, labels)  # no second k-means
    np.testing.assert_allclose(tree.centroids[3], x[labels == 3].mean(0), rtol=1e-5, atol=1e-6)
