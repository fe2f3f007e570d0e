"""A finished run's clusters in the user's hands: the table by file, folders per cluster, new images placed in the
learned clusters, features of any folder; each refusing to replace what exists."""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

from deepcluster import device, train
from deepcluster.cli import main
from deepcluster.device import kept_dtype, named_dtype, precision_name
from deepcluster.features import Reading
from deepcluster.session import Images, open_run
from deepcluster.space import embed
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
    # the saved labels are the trained network's features' nearest centroids, recomputed here from scratch in the
    # precision the run extracted them in (bf16 where this CPU multiplies it, else fp32), which it records
    run = open_run(finished, device="cpu", images=Images(whole=False))
    assert c.precision == precision_name(kept_dtype(run.cfg, run.device))
    x = embed(run.model, run.train_set, c, run.device, Reading(run.cfg.batch_size, amp=run.dtype, desc=None))
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


def test_assign_gives_the_training_images_their_clusters_back(finished, image_folder, tmp_path, monkeypatch):
    recorded = named_dtype(RunState.load(finished).clustering.precision)
    # here and on a CPU of the other kind (with bf16 multiplied in hardware, or without): the images are read in
    # the precision the run's clustering was extracted in, not in what this machine would pick for a new run
    for hardware in (True, False):
        monkeypatch.setattr(device, "bf16_products", lambda h=hardware: h)
        assert open_run(finished, device="cpu", images=Images(load=False)).dtype is recorded
        out = tmp_path / f"{hardware}.csv"
        assert main(["assign", str(finished), "--data", str(image_folder), "--out", str(out), "--device", "cpu"]) == 0
        rows = read_csv(out)
        assert [int(r["cluster"]) for r in rows] == np.load(finished / "assignments.npy").tolist()
        assert all(0 < float(r["fit"]) <= 1 for r in rows)


def test_assign_fits_new_images_of_the_classes_better_than_noise(finished, tmp_path):
    from conftest import make_image

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
    run = open_run(finished, device="cpu", images=Images(whole=False, cache=False))
    assert f.shape == (36, run.model.feature_dim) and len(names) == 36
    assert [n["image"] for n in names] == [str(p.relative_to(image_folder)) for p in run.train_set.files]
    same = centre_view_features(run.model, run.train_set, run.device, Reading(amp=run.dtype, desc=None))
    np.testing.assert_allclose(f, same, rtol=1e-2, atol=1e-5)  # in the run's clustering's precision (bf16: 3 digits)
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


def smooth_photo(rng: np.random.Generator, w: int, h: int):
    """A photograph-like image: random colours at a coarse grid, upsampled smoothly to ``w x h``."""
    coarse = rng.integers(0, 256, (rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.BICUBIC)


def test_duplicates_finds_planted_copies_and_only_them(tiny_config, tmp_path, monkeypatch):
    # 36 photograph-like images of assorted sizes and shapes; 3 of them get an exact copy and a copy resized to
    # 90 % and re-encoded as JPEG (quality 80)
    rng = np.random.default_rng(0)
    folder, planted = tmp_path / "photos", []
    for c in range(3):
        (folder / f"c{c}").mkdir(parents=True)
        for i in range(12):
            smooth_photo(rng, int(rng.integers(40, 97)), int(rng.integers(40, 97))).save(folder / f"c{c}/{i:02d}.png")
    for c in range(3):
        src = folder / f"c{c}/05.png"
        im = Image.open(src)
        im.save(src.parent / "copy-exact.png")
        im.resize((round(im.width * 0.9), round(im.height * 0.9))).save(src.parent / "copy-near.jpg", quality=80)
        planted.append({f"c{c}/05.png", f"c{c}/copy-exact.png", f"c{c}/copy-near.jpg"})
    tiny_config = dataclasses.replace(tiny_config, data=str(folder))
    train(tiny_config, tmp_path / "run", quiet=True)
    from deepcluster.export import duplicates

    def no_second_pass(*a, **k):
        raise AssertionError("the run's final features were embedded again")

    with monkeypatch.context() as m:  # the probes' features are the ones training kept, not a new pass
        m.setattr(duplicates, "embed", no_second_pass)
        assert main(["duplicates", str(tmp_path / "run"), "--device", "cpu"]) == 0
    groups: dict = {}
    for r in read_csv(tmp_path / "run" / "duplicates-groups.csv"):
        groups.setdefault(r["group"], set()).add(r["image"])
    # each planted triple is one group, and nothing else is
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, planted))
    assert main(["report", str(tmp_path / "run"), "--device", "cpu"]) == 0  # the report shows a sample of pairs
    assert "Near duplicates: the " in (tmp_path / "run" / "report" / "index.html").read_text()
    # semantic duplicates: close features within clusters, a superset of the exact copies
    assert main(["duplicates", str(tmp_path / "run"), "--by", "features", "--threshold", "0.97", "--out",
                 str(tmp_path / "f.csv"), "--device", "cpu"]) == 0
    pairs = {frozenset((r["image_a"], r["image_b"])) for r in read_csv(tmp_path / "f.csv")}
    assert all(frozenset((a, b)) in pairs for t in planted for a in t for b in t if a != b and "near" not in a + b)
    assert main(["duplicates", str(tmp_path / "run"), "--space", "fc", "--overwrite"]) == 2  # a features option


def test_the_duplicate_search_is_exact_within_the_clusters_it_probes():
    from deepcluster.export.duplicates import compared_pairs, duplicate_groups, similar_pairs

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    labels = np.arange(60) % 3
    probes = np.stack([labels, rng.integers(0, 3, 60)], 1)  # a second cluster drawn at random (maybe its own)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for p in (None, probes):
        i, j, s = similar_pairs(x, labels, 0.8, p)
        meets = lambda a, b, p=p: labels[a] == labels[b] or (p is not None and (labels[a] in p[b] or labels[b] in p[a]))
        brute = {(a, b) for a in range(60) for b in range(a + 1, 60) if meets(a, b) and xn[a] @ xn[b] >= 0.8}
        assert set(zip(i.tolist(), j.tolist())) == brute and len(i) == len(brute) and np.all(np.diff(s) <= 0)
    assert len(brute) > len(similar_pairs(x, labels, 0.8)[0])  # probing a second cluster finds more
    assert compared_pairs(labels) == 3 * 20 * 19 // 2
    assert compared_pairs(labels, probes) == 3 * 20 * 19 // 2 + 20 * int((probes[:, 1] != labels).sum())
    assert duplicate_groups(5, np.array([0, 3]), np.array([1, 4])).tolist() == [0, 0, -1, 1, 1]


def test_copies_keep_their_aspect_ratio_and_blank_images_their_grey_level(tmp_path):
    from deepcluster.data import ImageFolder
    from deepcluster.export.duplicates import copy_pairs, copy_signatures

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # 96 x 128, blocky
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(photo).resize((80, 60)).save(tmp_path / "a-small.jpg", quality=80)  # a copy
    Image.fromarray(photo).resize((128, 60)).save(tmp_path / "a-wide.png")  # the same pixels, another shape
    for name, level in (("white", 255), ("white-2", 254), ("black", 0)):
        Image.new("L", (40, 40), level).save(tmp_path / f"{name}.png")
    ds = ImageFolder(tmp_path, load_size=32)
    sig, means, aspects = copy_signatures(ds, workers=0)
    i, j, s = copy_pairs(sig, means, aspects, np.zeros(len(ds), np.int64), 0.98)
    names = [p.name for p in ds.files]
    assert {(names[a], names[b]) for a, b in zip(i, j)} == {("a-small.jpg", "a.png"), ("white-2.png", "white.png")}
    assert s.max() <= 1 + 1e-6 and np.isclose(sig[names.index("a-wide.png")] @ sig[names.index("a.png")], 1, atol=0.02)


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


def test_the_estimators_parameters_are_every_setting_and_unknown_ones_are_refused_at_construction():
    from sklearn.base import clone

    from deepcluster import DeepCluster
    from deepcluster.config import Config, ConfigError

    est = DeepCluster(out="runs/x", k=20, lr_schedule="cosine")
    params = est.get_params()
    assert {f.name for f in dataclasses.fields(Config)} - {"data", "device"} <= set(params)
    assert params["k"] == 20 and params["lr_schedule"] == "cosine" and params["epochs"] is None  # recipe's
    again = clone(est)
    assert again is not est and again.get_params() == params
    assert clone(est.set_params(k=7)).k == 7
    with pytest.raises(ConfigError, match="no setting 'kk'"):
        DeepCluster(kk=3)
