"""A finished run's clusters in the user's hands: the table by file, folders per cluster, new images placed in the
learned clusters, features of any folder; each refusing to replace what exists."""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
import pytest
import torch

from deepcluster import train
from deepcluster.cli import main
from deepcluster.clusters import embed
from deepcluster.session import open_run
from deepcluster.state import RunState


@pytest.fixture
def finished(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, overcluster="8")
    train(cfg, tmp_path / "run", quiet=True)
    return tmp_path / "run"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_run_keeps_the_trained_networks_clustering(finished):
    state = RunState.load(finished)
    c = state.clustering
    assert c.space == "whitened" and [len(x) for x in c.centroids] == [6, 8]
    assert np.array_equal(np.load(finished / "assignments.npy"), c.labels[0])
    # the saved labels are the trained network's features' nearest centroids, recomputed here from scratch
    run = open_run(finished, device="cpu", whole_data=False)
    x = embed(run.model, run.train_set, c, run.device, run.cfg.batch_size)
    d2 = ((x[:, None, :].astype(np.float64) - c.centroids[0][None]) ** 2).sum(-1)
    assert np.array_equal(d2.argmin(1), c.labels[0])
    np.testing.assert_allclose(np.sqrt(d2.min(1)), c.distances[0], rtol=1e-5, atol=1e-6)


def test_export_lists_every_image_with_its_cluster_and_refuses_to_replace(finished, image_folder, capsys):
    assert main(["export", str(finished)]) == 0
    rows = read_csv(finished / "clusters.csv")
    labels = np.load(finished / "assignments.npy")
    assert len(rows) == 36 and [int(r["cluster"]) for r in rows] == labels.tolist()
    assert all((image_folder / r["image"]).is_file() for r in rows)
    assert {r["label"] for r in rows} == {"disk", "hstripe", "vstripe"}
    assert {"cluster_k8", "distance_k8", "rank_k8", "cluster_size_k8"} <= set(rows[0])
    for c in set(labels.tolist()):  # ranks 1..size by distance, sizes agree
        mine = sorted((float(r["distance"]), int(r["rank"])) for r in rows if int(r["cluster"]) == c)
        assert [rk for _, rk in mine] == list(range(1, len(mine) + 1))
        assert all(int(r["cluster_size"]) == len(mine) for r in rows if int(r["cluster"]) == c)
    before = (finished / "clusters.csv").read_bytes()
    assert main(["export", str(finished)]) == 2
    assert "exists" in capsys.readouterr().err and (finished / "clusters.csv").read_bytes() == before
    assert main(["export", str(finished), "--overwrite", "--out", str(finished / "c.jsonl")]) == 0


def test_cluster_folders_link_every_image_largest_first_and_never_touch_the_data(finished, image_folder, tmp_path,
                                                                                    capsys):
    out = tmp_path / "by-cluster"
    assert main(["export", str(finished), "--out", str(tmp_path / "t.csv"), "--folders", str(out)]) == 0
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    sizes = [int(p.name.rsplit("_", 1)[1]) for p in folders]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == 36
    links = [f for p in folders for f in sorted(p.iterdir())]
    assert len(links) == 36 and all(f.is_symlink() and f.resolve().is_file() for f in links)
    assert all(image_folder in f.resolve().parents for f in links)
    # refusals: inside the data folder, an existing folder, an existing folder that is not ours
    for args, msg in (([ "--folders", str(image_folder / "x")], "inside the data folder"),
                      (["--folders", str(out)], "exists"),):
        assert main(["export", str(finished), "--out", str(tmp_path / "u.csv")] + args) == 2
        assert msg in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    assert main(["export", str(finished), "--out", str(tmp_path / "v.csv"), "--folders", str(foreign),
                 "--overwrite"]) == 2
    assert "not written by" in capsys.readouterr().err and (foreign / "mine.txt").read_text() == "keep"
    assert main(["export", str(finished), "--out", str(tmp_path / "w.csv"), "--folders", str(out), "--copy",
                 "--overwrite"]) == 0
    assert all(not f.is_symlink() for p in out.iterdir() if p.is_dir() for f in p.iterdir())


def test_assign_gives_the_training_images_their_clusters_back(finished, image_folder, tmp_path):
    assert main(["assign", str(finished), "--data", str(image_folder), "--out", str(tmp_path / "a.csv"),
                 "--device", "cpu"]) == 0
    rows = read_csv(tmp_path / "a.csv")
    assert [int(r["cluster"]) for r in rows] == np.load(finished / "assignments.npy").tolist()
    assert all(0 < float(r["fit"]) <= 1 for r in rows)


def test_assign_fits_new_images_of_the_classes_better_than_noise(finished, tmp_path):
    from conftest import make_image
    from PIL import Image

    rng = np.random.default_rng(5)
    fits = {}
    for kind in ("like", "noise"):
        folder = tmp_path / kind
        folder.mkdir()
        for i in range(12):  # new disks and stripes, or noise: nothing like them
            a = make_image(i % 3, rng) if kind == "like" else rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(a).save(folder / f"{i}.png")
        assert main(["assign", str(finished), "--data", str(folder), "--out", str(tmp_path / f"{kind}.csv"),
                     "--device", "cpu"]) == 0
        fits[kind] = np.mean([float(r["fit"]) for r in read_csv(tmp_path / f"{kind}.csv")])
    assert fits["noise"] > fits["like"] + 0.2, fits


def test_embed_streams_the_features_with_their_names(finished, image_folder, tmp_path):
    from deepcluster.features import centre_view_features

    out = tmp_path / "f.npy"
    assert main(["embed", str(finished), "--data", str(image_folder), "--out", str(out), "--device", "cpu"]) == 0
    f = np.load(out, mmap_mode="r")
    names = read_csv(tmp_path / "f.csv")
    run = open_run(finished, device="cpu", whole_data=False, cache=False)
    assert f.shape == (36, run.model.feature_dim) and len(names) == 36
    assert [n["image"] for n in names] == [str(p.relative_to(image_folder)) for p in run.train_set.files]
    np.testing.assert_allclose(f, centre_view_features(run.model, run.train_set, run.device, desc=None), atol=1e-5)
    assert main(["embed", str(finished), "--data", str(image_folder), "--out", str(tmp_path / "w.npy"),
                 "--space", "clustering", "--device", "cpu"]) == 0
    c = RunState.load(finished).clustering
    w = np.load(tmp_path / "w.npy")
    assert w.shape == (36, c.centroids[0].shape[1])
    torch.testing.assert_close(torch.from_numpy(w).norm(dim=1), torch.ones(36))
    assert main(["embed", str(finished), "--data", str(image_folder), "--out", str(tmp_path / "p.npy"),
                 "--layer", "conv2", "--space", "l2", "--device", "cpu"]) == 0
    assert np.load(tmp_path / "p.npy").shape[0] == 36
    assert main(["embed", str(finished), "--data", str(image_folder), "--out", str(out), "--device", "cpu"]) == 2


def test_bad_input_is_one_line_and_writes_nothing(finished, tmp_path, capsys, image_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_ckpt = tmp_path / "nockpt"
    no_ckpt.mkdir()
    cases = [(["assign", str(finished), "--data", str(empty)], "holds no image files"),
             (["assign", str(no_ckpt), "--data", str(image_folder)], "does not exist"),
             (["export", str(no_ckpt)], "does not exist"),
             (["assign", str(finished)], "needs the images"),
             (["embed", str(finished), "--data", str(image_folder), "--out", str(tmp_path / "f.txt")], ".npy")]
    for args, msg in cases:
        before = sorted(os.listdir(tmp_path))
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert sorted(os.listdir(tmp_path)) == before


def test_duplicates_finds_planted_copies_within_clusters(tiny_config, image_folder, tmp_path):
    from PIL import Image

    from deepcluster.export.duplicates import duplicate_groups, similar_pairs

    # exact duplicates and re-encoded, slightly resized copies of three images, beside the 36 originals
    planted = []
    for k, src in enumerate(sorted(image_folder.rglob("*.png"))[::12]):
        im = Image.open(src)
        im.save(src.parent / f"copy-exact-{k}.png")
        im.resize((34, 34)).save(src.parent / f"copy-near-{k}.jpg", quality=90)
        planted.append({str(src.relative_to(image_folder)), f"{src.parent.name}/copy-exact-{k}.png",
                        f"{src.parent.name}/copy-near-{k}.jpg"})
    train(tiny_config, tmp_path / "run", quiet=True)
    assert main(["duplicates", str(tmp_path / "run"), "--threshold", "0.97", "--device", "cpu"]) == 0
    groups: dict = {}
    for r in read_csv(tmp_path / "run" / "duplicates-groups.csv"):
        groups.setdefault(r["group"], set()).add(r["image"])
    found = list(groups.values())
    assert all(any(p <= g for g in found) for p in planted), (planted, found)  # every planted copy is found
    assert sum(len(g) for g in found) <= 3 * len(planted) + 6  # and few images besides
    assert main(["report", str(tmp_path / "run"), "--device", "cpu"]) == 0  # the report shows a sample of pairs
    assert "Near duplicates: the " in (tmp_path / "run" / "report" / "index.html").read_text()
    # the search is exact within clusters: the same pairs as a brute-force search over each cluster
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    labels = np.arange(50) % 3
    i, j, s = similar_pairs(x, labels, 0.8)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = {(a, b) for a in range(50) for b in range(a + 1, 50) if labels[a] == labels[b] and xn[a] @ xn[b] >= 0.8}
    assert set(zip(i.tolist(), j.tolist())) == brute and np.all(np.diff(s) <= 0)
    assert duplicate_groups(5, np.array([0, 3]), np.array([1, 4])).tolist() == [0, 0, -1, 1, 1]


def test_sample_takes_the_most_central_images_and_a_spread_of_each_cluster(finished, tmp_path):
    assert main(["sample", str(finished), "--per-cluster", "2", "--spread", "2", "--folders",
                 str(tmp_path / "reps"), "--device", "cpu"]) == 0
    rows = read_csv(finished / "representatives.csv")
    c = RunState.load(finished).clustering
    for k in np.unique(c.labels[0]):
        mine = [r for r in rows if int(r["cluster"]) == k]
        central = [r for r in mine if r["kind"] == "central"]
        members = np.flatnonzero(c.labels[0] == k)
        nearest = np.sort(c.distances[0][members])[:2]
        np.testing.assert_allclose(sorted(float(r["distance"]) for r in central), nearest, atol=1e-5)
        assert len({r["image"] for r in mine}) == len(mine) == min(4, len(members))
    assert sum(1 for p in (tmp_path / "reps").iterdir() if p.is_dir()) == len(np.unique(c.labels[0]))


def test_the_estimator_trains_like_the_cli_and_places_images(tiny_config, image_folder, tmp_path):
    from deepcluster import DeepCluster

    settings = {f: getattr(tiny_config, f) for f in ("arch", "image_size", "k", "epochs", "batch_size", "pca_dim",
                                                     "eval_seeds", "recipe", "seed")}
    est = DeepCluster(out=tmp_path / "est", device="cpu", **settings)
    assert est.fit(image_folder) is est
    train(dataclasses.replace(tiny_config, report=False), tmp_path / "cli", quiet=True)
    assert np.array_equal(est.labels_, np.load(tmp_path / "cli" / "assignments.npy"))  # the same training
    assert est.cluster_centers_.shape == (6, est.transform(image_folder).shape[1])
    assert np.array_equal(est.predict(image_folder), est.labels_)
    from deepcluster.data import ImageFolder

    pixels = torch.stack([ImageFolder(image_folder, 32)[i][0] for i in range(4)]).numpy()  # uint8, load size
    assert np.array_equal(est.predict(pixels), est.labels_[:4])
    again = DeepCluster.load(tmp_path / "est", device="cpu")
    assert np.array_equal(again.labels_, est.labels_) and again.get_params()["out"] == tmp_path / "est"
