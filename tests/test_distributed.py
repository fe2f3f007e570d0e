"""Training under torchrun: 2 processes (gloo, CPU) on generated images against one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepcluster import distributed as dist
from deepcluster import train
from deepcluster.rundir import RUN_FILES

TESTS = Path(__file__).parent


def torchrun(*args: str, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 or not check, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def train_args(image_folder) -> list[str]:
    return ["--data", str(image_folder), "--arch", "small", "--image-size", "32", "--k", "6", "--batch-size", "8",
            "--pca-dim", "16", "--pca-sample", "20", "--eval-seeds", "1", "--device", "cpu", "--no-report"]


def test_helpers_give_the_one_process_answer_without_a_process_group():
    assert not dist.enabled() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    sample = np.array([5, 3, 3, 9])
    np.testing.assert_array_equal(dist.shard(sample), sample)
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(dist.gather_rows(rows, np.array([2, 0, 1]), 3), rows[[1, 2, 0]])
    out = np.zeros((5, 2), np.float32)
    dist.gather_rows(rows, np.array([4, 0, 2]), 3, out=out)
    np.testing.assert_array_equal(out[[4, 0, 2]], rows)
    placed = dist.gather_rows(rows, np.array([7, 3, 5]), 3, positions=np.array([3, 5, 7]))
    np.testing.assert_array_equal(placed, rows[[1, 2, 0]])
    assert dist.all_sum([1.5, 2.0]) == [1.5, 2.0]
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="boom"):
        dist.on_main(lambda: (_ for _ in ()).throw(ValueError("boom")))


@pytest.mark.parametrize("n", [9, 10, 12])
def test_shards_are_equal_in_size_and_interleave_back_to_the_list(monkeypatch, n):
    sample = np.random.default_rng(n).permutation(n)
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    parts = []
    for r in range(3):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        parts.append(dist.shard(sample))
    assert len({len(p) for p in parts}) == 1  # DDP needs the same number of steps on every rank
    interleaved = np.stack(parts, 1).ravel()
    np.testing.assert_array_equal(interleaved[:n], sample)
    np.testing.assert_array_equal(interleaved[n:], sample[:len(interleaved) - n])  # the padding


@pytest.mark.heavy
def test_two_processes_compute_what_one_process_computes(image_folder, tmp_path):
    from dist_worker import stages, worker_config

    torchrun(str(TESTS / "dist_worker.py"), str(image_folder), str(tmp_path))
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    one = stages(worker_config(str(image_folder)))
    # rank 0 gathered every image's features, in dataset order, and the whitened ones (PCA fitted on a sample,
    # the rest projected while extracted); the other rank holds none
    np.testing.assert_allclose(ranks[0]["feats"], one["feats"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["x"], one["x"], atol=1e-4)
    assert ranks[1]["feats"].size == 0 and ranks[1]["x"].size == 0
    # one clustering, broadcast: the same pseudo-labels everywhere, here also those of one process
    np.testing.assert_array_equal(ranks[0]["labels"], ranks[1]["labels"])
    np.testing.assert_array_equal(ranks[0]["labels"], one["labels"])
    # each rank trains on its slice of the common sample list; together they are that list
    np.testing.assert_array_equal(ranks[0]["sample"], one["sample"])
    together = np.stack([ranks[0]["mine"], ranks[1]["mine"]], 1).ravel()
    np.testing.assert_array_equal(together, one["sample"])
    assert not np.array_equal(ranks[0]["mine"], ranks[1]["mine"])
    # DDP kept the replicas equal through the epoch's training, BatchNorm statistics included
    np.testing.assert_array_equal(ranks[0]["weights"], ranks[1]["weights"])
    # no rank leaves the process group (and exits) before rank 0 has written what it writes
    assert float((tmp_path / "left1").read_text()) >= os.path.getmtime(tmp_path / "rank0.npz")


@pytest.mark.heavy
def test_torchrun_training_writes_one_run_and_resumes_exactly(image_folder, tmp_path, tiny_config):
    args = ["-m", "deepcluster", "train", "--data", str(image_folder), "--arch", "small", "--image-size", "32",
            "--k", "6", "--batch-size", "8", "--pca-dim", "16", "--pca-sample", "20", "--eval-seeds", "1",
            "--device", "cpu"]
    whole = torchrun(*args, "--epochs", "2", "--out", str(tmp_path / "whole"))
    assert whole.stdout.count("DeepCluster run in") == 1  # rank 0 alone prints
    # the files of a one-process run, once each, and nothing else (no per-rank copies, no temporary files)
    tiny_config.batch_size, tiny_config.pca_sample = 8, 20
    train(tiny_config, tmp_path / "single", quiet=True)
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert files(tmp_path / "whole") == files(tmp_path / "single")
    assert set(files(tmp_path / "whole")) >= set(RUN_FILES)
    assert len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()) == 2

    # stopped after epoch 1, resumed under torchrun: the same run as the uninterrupted one
    torchrun(*args, "--epochs", "1", "--no-report", "--out", str(tmp_path / "resumed"))
    torchrun(*args, "--epochs", "2", "--no-report", "--resume", "--out", str(tmp_path / "resumed"))
    np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "assignments.npy"),
                                  np.load(tmp_path / "whole" / "assignments.npy"))
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["model"] for d in ("whole", "resumed"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.heavy
def test_torchrun_v2_gathers_every_images_projection_into_the_bank(image_folder, tmp_path):
    out = tmp_path / "v2"
    torchrun("-m", "deepcluster", "train", "--data", str(image_folder), "--arch", "small", "--image-size", "32",
             "--method", "v2", "--k", "6", "--proj-dim", "8", "--batch-size", "8", "--eval-seeds", "1",
             "--device", "cpu", "--no-report", "--epochs", "2", "--out", str(out))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    bank = ckpt["bank"]
    # v2 runs under torchrun (the bank's rows come back from both ranks through gather_rows, whose placement by
    # index the worker test checks): one unit-norm projection per image, on rank 0 only
    assert bank.shape == (36, 8)
    torch.testing.assert_close(bank.norm(dim=1), torch.ones(36))
    assert len(np.unique(bank.numpy().round(5), axis=0)) == 36


@pytest.mark.heavy
def test_a_run_resumes_on_another_number_of_processes(image_folder, tmp_path):
    from deepcluster.rundir import RunDir

    args = ["-m", "deepcluster", "train", *train_args(image_folder), "--epochs"]
    run = lambda name, epochs, nproc, *more: torchrun(*args, str(epochs), "--out", str(tmp_path / name), *more,
                                                      nproc=nproc)
    run("one", 2, 1)  # one process throughout (torchrun with one process makes no process group)
    run("two", 2, 2)
    run("one-then-two", 1, 1)
    run("one-then-two", 2, 2, "--resume")
    run("two-then-one", 1, 2)
    run("two-then-one", 2, 1, "--resume")
    clusters = {d: RunDir(tmp_path / d).epoch_clusters(2) for d in ("one", "two", "one-then-two", "two-then-one")}
    # the resumed processes start from the checkpoint's weights and BatchNorm statistics: epoch 2's clustering,
    # made from the network epoch 1 trained, is the one the run would have made had it not changed its number of
    # processes (extraction sharded over 2 processes and gathered gives the one-process features)
    for resumed, uninterrupted in (("one-then-two", "one"), ("two-then-one", "two")):
        for epoch in (1, 2):
            np.testing.assert_array_equal(clusters[resumed][epoch], clusters[uninterrupted][epoch])
        rows = [json.loads(line) for line in (tmp_path / resumed / "metrics.jsonl").read_text().splitlines()]
        same = [json.loads(line) for line in (tmp_path / uninterrupted / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        assert {k: v for k, v in rows[0].items() if "time" not in k} == {k: v for k, v in same[0].items()
                                                                         if "time" not in k}
        assert torch.load(tmp_path / resumed / "checkpoint.pt", weights_only=True)["epoch"] == 2
    # one process and two see the same network at epoch 1's clustering; their training passes differ (each
    # process normalises its own share of the batch and draws its own crops), so from epoch 2 on they part
    np.testing.assert_array_equal(clusters["one"][1], clusters["two"][1])


@pytest.mark.heavy
def test_an_error_on_rank_0_stops_every_rank_with_the_same_line(image_folder, tmp_path):
    res = torchrun(str(TESTS / "dist_worker.py"), "full-disk", *train_args(image_folder), "--epochs", "2",
                   "--out", str(tmp_path / "run"), check=False)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("deepcluster: error:")]
    assert len(lines) == 2 and lines[0] == lines[1], res.stderr[-3000:]
    assert "metrics.jsonl (No space left on device)" in lines[0] and "--resume" in lines[0]
    assert "deepcluster/" not in res.stderr  # no traceback from inside the package, on either rank
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
