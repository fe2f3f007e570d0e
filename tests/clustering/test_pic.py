"""Power Iteration Clustering: blobs found, the power iterations' fixed point, pointers to the local maxima,
singletons moved, contiguous labels, and the same labels as a plain-loop implementation of the same steps."""
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from deepcluster.clustering import PIC
from deepcluster.clustering.pic import follow_pointers, move_singletons, power_iterations
from deepcluster.evaluate import nmi

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from pic import blobs, pic_python_loops  # noqa: E402


def test_well_separated_blobs_are_found():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 16)) * 10
    truth = np.repeat(np.arange(6), 50)
    x = centres[truth] + rng.standard_normal((300, 16)) * 0.05
    pic = PIC(n_neighbors=5, sigma=0.2).fit(x)
    # PIC may cut a blob into a few pieces, never mixes two: every cluster is pure, and the pieces are few
    assert all(len(np.unique(truth[pic.labels_ == c])) == 1 for c in range(pic.n_clusters_))
    assert pic.n_clusters_ <= 12 and nmi(truth, pic.labels_) > 0.8
    # with a neighbourhood wide enough to connect each blob, every blob is exactly one cluster
    wide = PIC(n_neighbors=20, sigma=1.0).fit(x)
    assert wide.n_clusters_ == 6 and nmi(truth, wide.labels_) > 0.999


def test_power_iterations_reach_the_known_fixed_point():
    rng = np.random.default_rng(1)
    a = sp.random(40, 40, density=0.15, random_state=2, data_rvs=rng.random)
    w = (a + a.T).tocsr()
    alpha = 0.05
    # The fixed point of v = c (alpha W v + (1 - alpha) / N), c the L1 normaliser: (I - c alpha W) v is
    # constant, with c = 1 / (alpha 1'W v + 1 - alpha) since 1'v = 1. Solved here by dense linear algebra on c.
    c = 1.0
    for _ in range(100):
        v_star = np.linalg.solve(np.eye(40) - c * alpha * w.toarray(), np.ones(40))
        v_star /= v_star.sum()
        c = 1.0 / (alpha * (w @ v_star).sum() + 1 - alpha)
    np.testing.assert_allclose(power_iterations(w, alpha, 200), v_star, rtol=1e-10)
    # on a star the centre collects the most mass, and every leaf points to it
    star = sp.csr_matrix((np.ones(10), (np.zeros(10, int), np.arange(1, 11))), shape=(11, 11))
    star = (star + star.T).tocsr()
    v = power_iterations(star, 0.001, 200)
    assert v.argmax() == 0 and (follow_pointers(star, v) == 0).all()


def test_pointers_climb_a_chain_to_its_peaks():
    # a path 0 - 1 - ... - 8 with a peak of v at 2 and at 6: everything flows to the nearest peak uphill
    n = 9
    w = sp.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], format="csr")
    v = np.array([1, 2, 5, 3, 1, 2, 6, 4, 0], float)
    roots = follow_pointers(w, v)
    assert roots.tolist() == [2, 2, 2, 2, 2, 6, 6, 6, 6]
    # node 4 sits in a valley: it goes to the side with the larger gain W_ij (v_j - v_i): v_5 - v_4 = 1 vs
    # v_3 - v_4 = 2, so it joins peak 2 when the 4-3 edge is as heavy; make 4-5 three times heavier and it flips
    w = w.tolil()
    w[4, 5] = w[5, 4] = 3.0
    assert follow_pointers(w.tocsr(), v)[4] == 6


def test_no_singleton_keeps_a_neighbour_outside_singletons():
    x = blobs(800, 32, 40, seed=3)
    pic = PIC(n_neighbors=3, sigma=0.2).fit(x)
    raw = PIC(n_neighbors=3, sigma=0.2, move_singletons=False).fit(x)
    assert raw.health_.singletons > 0  # the case arises here ...
    assert pic.n_singletons_moved_ > 0  # ... and is handled
    from deepcluster.clustering.pic import affinity_matrix, knn_graph

    w = affinity_matrix(*knn_graph(x, 3), 0.2)
    sizes = np.bincount(pic.labels_)
    for i in np.flatnonzero(sizes[pic.labels_] == 1):
        neighbours = w.indices[w.indptr[i]:w.indptr[i + 1]]
        assert (sizes[pic.labels_[neighbours]] == 1).all()
    # labels are contiguous 0..C-1 and the health figures agree with them
    assert set(np.unique(pic.labels_)) == set(range(pic.n_clusters_)) and sizes.sum() == 800
    assert pic.health_.metrics() == {"clusters_found": pic.n_clusters_, "singletons_moved": pic.n_singletons_moved_,
                                     "singletons_left": int((sizes == 1).sum())}


def test_move_singletons_chains_through_moved_nodes():
    # 0 - 1 - 2 = 3 (2 and 3 form a pair): 1 joins the pair, then 0, whose only neighbour has just stopped
    # being a singleton, follows in a second round
    w = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 5], [0, 0, 5, 0]], float))
    labels, moved = move_singletons(w, np.array([0, 1, 2, 2]))
    assert labels.tolist() == [2, 2, 2, 2] and moved == 2


def test_vectorised_steps_equal_the_plain_loops():
    x = blobs(600, 24, 20, seed=4)
    pic = PIC(n_neighbors=5, sigma=0.3, alpha=0.001, n_iter=50).fit(x)
    from deepcluster.clustering.pic import knn_graph

    d2, idx = knn_graph(x, 5)
    assert np.array_equal(pic.labels_, pic_python_loops(d2, idx, 0.3, 0.001, 50))


def test_duplicate_points_never_count_as_their_own_neighbour():
    from deepcluster.clustering.pic import knn_graph

    x = np.repeat(np.random.default_rng(5).standard_normal((10, 4)), 3, axis=0)
    d2, idx = knn_graph(x, 4)
    assert not (idx == np.arange(30)[:, None]).any() and (d2 >= 0).all()


def test_the_torch_search_finds_the_exact_graph_of_faiss():
    """The search a CUDA run uses when faiss has no GPU, run here on the CPU: the same neighbours at the same
    distances (up to float rounding, which may swap two near-equal neighbours)."""
    from deepcluster.clustering.pic import _drop_self, _search_torch, knn_graph

    x = blobs(3000, 32, 30, seed=2)
    d2, idx = knn_graph(x, 5)
    td2, tidx = _drop_self(*_search_torch(x, x, 6, "cpu"), 5)
    np.testing.assert_allclose(td2, d2, atol=1e-5)
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(idx, tidx)]) > 4.99


def test_an_approximate_graph_holds_nearly_every_neighbour_and_gives_the_same_clusters(monkeypatch):
    from deepcluster.clustering import pic as pic_module
    from deepcluster.clustering.pic import graph_recall, knn_graph

    x = blobs(6000, 64, 60, seed=3)
    exact, approx = PIC(graph="exact").fit(x), PIC(graph="ivf", seed=1).fit(x)
    assert exact.graph_ == "exact:faiss-cpu" and exact.graph_recall_ is None and "knn_recall" not in (
        exact.health_.metrics())
    assert approx.graph_.startswith("ivf:") and approx.graph_recall_ >= 0.95
    assert approx.health_.metrics()["knn_recall"] == approx.graph_recall_
    assert nmi(exact.labels_, approx.labels_) > 0.95
    # the recall check is a real measurement: the exact graph scores 1, a graph of random neighbours about 0
    _, idx = knn_graph(x, 5)
    assert graph_recall(x, idx) == 1.0
    assert graph_recall(x, np.random.default_rng(0).integers(0, len(x), idx.shape)) < 0.01
    # auto: exact up to the threshold, approximate above it, on a CPU; exact on a GPU through torch
    assert PIC()._search_plan(pic_module.APPROXIMATE_ABOVE)[0] == "exact"
    assert PIC()._search_plan(pic_module.APPROXIMATE_ABOVE + 1) == ("ivf", False, "cpu")
    monkeypatch.setattr(pic_module, "APPROXIMATE_ABOVE", 5000)
    assert PIC(seed=1).fit(x).graph_.startswith("ivf:")
    # data with no neighbourhood structure: the approximate graph misses the recall target, the exact one is used
    noise = np.random.default_rng(4).standard_normal((6000, 64)).astype(np.float32)
    fallback = PIC(seed=1).fit(noise / np.linalg.norm(noise, axis=1, keepdims=True))
    assert fallback.graph_ == "exact:faiss-cpu" and fallback.graph_recall_ is None
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert PIC()._search_plan(10 ** 7) == ("exact", False, "cuda:0")
    assert PIC(device="cpu")._search_plan(10 ** 7)[0] == "ivf"


def test_training_with_pic_is_resume_exact(tiny_config, tmp_path):
    import dataclasses

    from conftest import assert_resume_is_exact

    cfg = dataclasses.replace(tiny_config, clustering="pic", k=100, epochs=2)  # k is unused by PIC, even > N
    a, _, straight = assert_resume_is_exact(cfg, tmp_path)
    for r in straight["metrics"]:
        assert 2 <= r["clusters"] == r["clusters_found"] <= 36 and r["singletons_left"] == 0
        assert "kmeans_objective" not in r and r["imbalance"] >= 1
    assert a["head_classes"] == straight["metrics"][-1]["clusters"]
    assert len(np.unique(a["assignment"].numpy())) == a["head_classes"]


def test_pic_with_v2_is_refused_in_one_line(image_folder, tmp_path, capsys):
    from deepcluster.cli import main

    assert main(["train", "--data", str(image_folder), "--out", str(tmp_path / "r"), "--clustering", "pic",
                 "--method", "v2"]) == 2
    err = capsys.readouterr().err
    assert "--clustering pic works with --method v1" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
