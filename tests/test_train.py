import dataclasses
import json

import numpy as np
import pytest
import torch

from deepcluster import ConfigError, TrainingError, train
from deepcluster.checkpoint import load_checkpoint

TIMES = ("time_features", "time_clustering", "time_training")


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def test_two_epochs_write_a_complete_run(tiny_config, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config, out, quiet=True)
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "assignments.npy", "eval.json", "curves.png",
                 "clusters.png"):
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert np.isfinite(r["loss"]) and r["clusters"] == 6 and 0 <= r["nmi_labels"] <= 1
        assert r["imbalance"] >= 1 and r["empty_resplit"] >= 0 and r["kmeans_objective"] > 0
    assert rows[0]["nmi_prev"] is None and 0 <= rows[1]["nmi_prev"] <= 1
    assignment = np.load(out / "assignments.npy")
    assert assignment.shape == (36,) and len(np.unique(assignment)) == 6
    ev = summary["eval"]
    assert ev["k"] == 3 and json.loads((out / "eval.json").read_text()) == ev
    rows = {(r["features"], r["preprocessing"]): r for r in ev["results"]}
    assert set(rows) == {("trained", "L2"), ("trained", "PCA-whitened 16 + L2"), ("random-init", "L2"),
                         ("random-init", "PCA-whitened 16 + L2"), ("pixels", "raw"), ("pixels", "L2"),
                         ("pixels", "PCA-50 + L2")}
    for r in rows.values():
        # with 3 balanced classes, the best one-to-one matching can never be worse than 1/3
        assert 0 <= r["nmi"] <= 1 and 1 / 3 - 1e-9 <= r["acc"] <= 1 and r["k"] == 3


def assert_resume_is_exact(cfg, tmp_path):
    """Run ``cfg`` straight into ``a``; run one epoch into ``b`` and resume it to the end. Both must end with the
    same metrics (times aside) and the same weights; returns their checkpoints."""
    straight = train(cfg, tmp_path / "a", quiet=True)
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "b", quiet=True)
    resumed = train(cfg, tmp_path / "b", resume=True, quiet=True)
    assert strip_times(resumed["metrics"]) == strip_times(straight["metrics"])
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in "ab")
    assert a["epoch"] == b["epoch"] == cfg.epochs
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b, straight


def test_resume_repeats_an_uninterrupted_run_exactly(tiny_config, tmp_path):
    a, b, _ = assert_resume_is_exact(dataclasses.replace(tiny_config, epochs=3), tmp_path)
    assert torch.equal(a["assignment"], b["assignment"])
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_supervised_resume_repeats_an_uninterrupted_run_exactly(tiny_config, tmp_path):
    assert_resume_is_exact(dataclasses.replace(tiny_config, supervised=True, epochs=2), tmp_path)


def test_resume_drops_metrics_of_epochs_the_checkpoint_lacks(tiny_config, tmp_path):
    out = tmp_path / "run"
    cfg = dataclasses.replace(tiny_config, epochs=1)
    train(cfg, out, quiet=True)
    with open(out / "metrics.jsonl", "a") as f:  # a crash after the metrics line, before the checkpoint
        f.write(json.dumps({"epoch": 2, "loss": 9.9}) + "\n" + '{"epoch": 3, "lo')
    train(dataclasses.replace(cfg, epochs=2), out, resume=True, quiet=True)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["loss"] != 9.9


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_an_existing_run_is_never_overwritten_by_accident(tiny_config, tmp_path):
    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config, epochs=1), out, quiet=True)
    before = snapshot(out)
    with pytest.raises(ConfigError, match="already holds a run: pass --resume"):
        train(tiny_config, out, quiet=True)
    with pytest.raises(ConfigError, match=r"another config \(k: 6 -> 5\)"):
        train(dataclasses.replace(tiny_config, k=5), out, resume=True, quiet=True)
    assert snapshot(out) == before


def test_a_supervised_run_resumes_under_other_clustering_settings(tiny_config, tmp_path):
    from deepcluster.rundir import RunDir

    sup = dataclasses.replace(tiny_config, supervised=True)
    RunDir(tmp_path).write_config(sup)
    # k, the PCA and the method are never read by a supervised run: the same run, resumable
    assert RunDir(tmp_path).open(dataclasses.replace(sup, k=50, pca_dim=8, method="v2"), True, False)
    with pytest.raises(ConfigError, match=r"another config \(lr: 0.05 -> 0.5\)"):
        RunDir(tmp_path).open(dataclasses.replace(sup, lr=0.5), True, False)
    with pytest.raises(ConfigError, match=r"another config \(supervised: True -> False\)"):
        RunDir(tmp_path).open(tiny_config, True, False)


@pytest.mark.parametrize("change,message", [
    ({"k": 1000}, "k = 1000 clusters but only 36 images: lower --k to at most 36"),
    ({"k": 1}, "k = 1 is too small"),
    ({"arch": "resnet"}, "unknown architecture 'resnet'"),
    ({"data": "/nonexistent/folder"}, "does not exist"),
])
def test_bad_settings_stop_before_anything_is_written(tiny_config, tmp_path, change, message):
    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config, epochs=1), out, quiet=True)
    before = snapshot(out)
    with pytest.raises(ConfigError, match=message):
        train(dataclasses.replace(tiny_config, **change), out, overwrite=True, quiet=True)
    assert snapshot(out) == before


def test_folders_without_usable_images_are_refused(tiny_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no image files"):
        train(dataclasses.replace(tiny_config, data=str(empty)), tmp_path / "r1", quiet=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"")
    (broken / "b.png").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"), pytest.raises(ConfigError, match="no readable"):
        train(dataclasses.replace(tiny_config, data=str(broken)), tmp_path / "r2", quiet=True)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_non_finite_loss_stops_with_advice(tiny_config, tmp_path):
    with pytest.raises(TrainingError, match=r"lower the learning rate \(--lr, now 1e\+30\)"):
        train(dataclasses.replace(tiny_config, lr=1e30), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # epoch 1 never finished: nothing claims it did


def test_a_non_finite_loss_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config, epochs=1), out, quiet=True)
    before = snapshot(out)
    from deepcluster.models import DeepClusterNet

    monkeypatch.setattr(DeepClusterNet, "forward", lambda self, x: torch.full((len(x), 6), float("nan")))
    with pytest.raises(TrainingError, match="the loss became nan at epoch 2"):
        train(tiny_config, out, resume=True, quiet=True)
    after = snapshot(out)
    assert after["checkpoint.pt"] == before["checkpoint.pt"]
    assert after["metrics.jsonl"] == before["metrics.jsonl"]


def test_v2_keeps_its_head_and_resumes_exactly(tiny_config, tmp_path):
    a, b, straight = assert_resume_is_exact(
        dataclasses.replace(tiny_config, method="v2", epochs=3, proj_dim=8), tmp_path)
    assert torch.equal(a["bank"], b["bank"]) and a["bank"].shape == (36, 8)
    # the bank holds unit vectors, the prototypes are unit vectors, and they are the bank's k-means centroids
    assert torch.allclose(a["bank"].norm(dim=1), torch.ones(36), atol=1e-5)
    protos = a["model"]["head.prototypes"]
    assert protos.shape == (6, 8) and torch.allclose(protos.norm(dim=1), torch.ones(6), atol=1e-5)
    assert all(np.isfinite(r["loss"]) and r["clusters"] == 6 for r in straight["metrics"])


def test_v2_projection_persists_across_epochs(tiny_config, tmp_path, monkeypatch):
    """v1 re-initialises its head every epoch; v2 must not: epoch 2 starts from the projection epoch 1 learned."""
    from deepcluster.training import methods as t

    cfg = dataclasses.replace(tiny_config, method="v2", epochs=2, proj_dim=8)
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "one", quiet=True)
    after_one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]["head.projection.weight"]
    seen = []
    real = t.train_on_labels

    def spy(model, *a, **k):
        seen.append(model.head.projection.weight.detach().clone())
        return real(model, *a, **k)

    monkeypatch.setattr(t, "train_on_labels", spy)
    train(cfg, tmp_path / "two", quiet=True)
    assert len(seen) == 2 and torch.equal(seen[1], after_one) and not torch.equal(seen[0], seen[1])


def test_v2_centre_bank_is_the_centre_view_projection_of_the_previous_weights(tiny_config, tmp_path):
    """--bank centre: each epoch clusters a fresh centre-view, eval-mode pass, so the bank of epoch 2 is exactly
    the projection of the centre view by epoch 1's weights; resume stays exact."""
    from deepcluster.data import load_datasets
    from deepcluster.features import centre_view_features
    from deepcluster.network import make_model, restore_model
    from deepcluster.state import RunState

    cfg = dataclasses.replace(tiny_config, method="v2", bank="centre", epochs=2, proj_dim=8)
    a, _, _ = assert_resume_is_exact(cfg, tmp_path)
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "one", quiet=True)
    epoch1 = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    data = load_datasets(cfg)[0]
    model = make_model(cfg, data.channels, torch.device("cpu"))
    restore_model(model, RunState.load(tmp_path / "one"))
    with torch.no_grad():
        feats = torch.from_numpy(centre_view_features(model, data, torch.device("cpu"), desc=None))
        expected = model.head.project(torch.relu(feats))
    assert torch.allclose(a["bank"], expected, atol=1e-5)
    # epoch 1's bank came from the initial weights, and training did not overwrite it with crop/dropout noise
    assert not torch.allclose(epoch1["bank"], expected, atol=1e-3)


def test_cosine_schedule_sets_each_epochs_lr_and_resumes_exactly(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, lr=0.04, lr_schedule="cosine", epochs=3)
    a, _, straight = assert_resume_is_exact(cfg, tmp_path)
    # half a cosine over 3 epochs: lr * (1 + cos(pi * (e - 1) / 3)) / 2 = 0.04, 0.03, 0.01
    np.testing.assert_allclose([r["lr"] for r in straight["metrics"]], [0.04, 0.03, 0.01], rtol=1e-12)
    assert all(abs(g["lr"] - 0.01) < 1e-12 for g in a["optimizer"]["param_groups"])


def test_a_folder_decoded_into_memory_trains_exactly_as_one_read_from_disk(tiny_config, image_folder, tmp_path):
    from deepcluster.data import ImageFolder, TensorImages, in_memory, load_datasets

    disk = ImageFolder(image_folder, 32)
    mem = in_memory(disk, budget_gb=1.0, desc=None)
    assert isinstance(mem, TensorImages) and len(mem) == len(disk) == 36 and mem.name == disk.name
    np.testing.assert_array_equal(mem.targets, disk.targets)
    assert all(torch.equal(mem[i][0], disk[i][0]) for i in range(len(disk)))
    assert in_memory(disk, budget_gb=36 * 3 * 32 * 32 / 2 ** 30 * 0.99, desc=None) is disk  # over the budget
    assert isinstance(load_datasets(tiny_config)[0], TensorImages)
    assert isinstance(load_datasets(dataclasses.replace(tiny_config, cache_gb=0))[0], ImageFolder)
    # the cache changes where the bytes come from, nothing else: same clusters, same weights
    train(tiny_config, tmp_path / "mem", quiet=True)
    train(dataclasses.replace(tiny_config, cache_gb=0), tmp_path / "disk", quiet=True)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("mem", "disk"))
    assert torch.equal(a["assignment"], b["assignment"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_loader_workers_default_to_none_on_cpus_and_in_memory_and_to_the_cores_on_gpu_machines(image_folder,
                                                                                                 monkeypatch):
    from deepcluster.data import ImageFolder, auto_workers, in_memory, make_loader

    files = ImageFolder(image_folder, 32)
    mem = in_memory(files, budget_gb=1.0, desc=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_workers(files) == 0 and make_loader(files, range(4), 2, None).num_workers == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: decoding is the bottleneck
    assert auto_workers(mem) == 0  # nothing to decode
    for cores, local_world, expected in ((64, 1, 16), (16, 1, 15), (16, 2, 7), (4, 1, 3), (1, 1, 1), (8, 8, 1)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, c=cores: set(range(c)))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
        assert auto_workers(files) == expected, (cores, local_world)
    assert make_loader(files, range(4), 2, None).num_workers == 1
    assert make_loader(files, range(4), 2, 0).num_workers == 0  # asked for: obeyed
