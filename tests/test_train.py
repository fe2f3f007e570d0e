import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import assert_resume_is_exact

from deepcluster import ConfigError, TrainingError, train
from deepcluster.evaluate import nmi
from deepcluster.rundir import RunDir
from deepcluster.state import RunState


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
    saved = RunDir(out).saved_config()  # what the run computed in, not "auto"
    assert saved.precision == "fp32" and saved.extract_precision in ("fp32", "bf16")
    assignment = np.load(out / "assignments.npy")
    assert assignment.shape == (36,) and len(np.unique(assignment)) == 6
    # the cluster log keeps every epoch's pseudo-labels, one byte an image for k = 6; NMI(2, 1) is the row's
    log = RunDir(out).epoch_clusters()
    assert sorted(log) == [1, 2] and all(a.dtype == np.uint8 and a.shape == (36,) for a in log.values())
    assert np.array_equal(log[2], RunState.load(out).assignment)
    assert nmi(log[1], log[2]) == pytest.approx(rows[1]["nmi_prev"])
    assert list(RunDir(out).epoch_clusters(1)) == [1]  # an epoch the checkpoint lacks is not read
    ev = summary["eval"]
    assert ev["k"] == 3 and json.loads((out / "eval.json").read_text()) == ev
    rows = {(r["features"], r["preprocessing"]): r for r in ev["results"]}
    assert set(rows) == {("trained", "L2"), ("trained", "PCA-whitened 16 + L2"), ("random-init", "L2"),
                         ("random-init", "PCA-whitened 16 + L2"), ("pixels", "raw"), ("pixels", "L2"),
                         ("pixels", "PCA-50 + L2")}
    for r in rows.values():
        # with 3 balanced classes, the best one-to-one matching can never be worse than 1/3
        assert 0 <= r["nmi"] <= 1 and 1 / 3 - 1e-9 <= r["acc"] <= 1 and r["k"] == 3
    # where the command's time went: parts that do not overlap and add up to it
    timing = json.loads((out / "timing.json").read_text())
    assert timing == summary["timing"]
    parts = timing["parts"]
    assert set(parts) == {"data", "set-up", "epochs", "checkpoints", "final clustering", "evaluation", "reports",
                          "other"}
    assert all(v >= 0 for v in parts.values()) and sum(parts.values()) == pytest.approx(timing["seconds"])
    epochs = sum(r["time_features"] + r["time_clustering"] + r["time_training"] for r in rows_of(out))
    assert epochs <= parts["epochs"] < timing["seconds"]


def rows_of(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_page_of_a_run_in_progress_is_rewritten_at_most_every_report_every_seconds(tiny_config, tmp_path,
                                                                                       monkeypatch):
    import sys

    module, written = sys.modules["deepcluster.train"], []
    monkeypatch.setattr(module, "_report", lambda *a, final, **kw: written.append(final))
    cfg = dataclasses.replace(tiny_config, epochs=3)
    monkeypatch.setattr(module, "REPORT_EVERY", 1e9)
    train(cfg, tmp_path / "a", quiet=True)
    assert written == [True]  # the finished run's page alone
    monkeypatch.setattr(module, "REPORT_EVERY", 0.0)
    written.clear()
    train(cfg, tmp_path / "b", quiet=True)
    assert written == [False, False, True]  # after epochs 1 and 2, then the finished page


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
    # --overwrite replaces the run, its cluster log included: the new run's one epoch, no stale second one
    (out / "clusters" / "epoch-0002.npy").write_bytes((out / "clusters" / "epoch-0001.npy").read_bytes())
    train(dataclasses.replace(tiny_config, epochs=1, k=5), out, overwrite=True, quiet=True)
    assert sorted(RunDir(out).epoch_clusters()) == [1] and RunDir(out).epoch_clusters()[1].max() < 5


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


def test_a_run_that_fails_after_its_last_checkpoint_began_still_lands_it(tiny_config, tmp_path, monkeypatch):
    import importlib
    import time

    run_module = importlib.import_module("deepcluster.train")  # the module, not the function the package exports
    save = RunState.save

    def slow(self, path):  # a large checkpoint on a slow disk: still in flight when the evaluation fails
        time.sleep(0.5)
        save(self, path)

    def failing(*a, **k):
        raise RuntimeError("the evaluation failed")

    monkeypatch.setattr(RunState, "save", slow)
    monkeypatch.setattr(run_module, "evaluate_features", failing)
    with pytest.raises(RuntimeError, match="the evaluation failed"):
        train(tiny_config, tmp_path / "run", quiet=True)
    # the final write (the run's clustering) began before the evaluation, and had landed when train() raised
    state = RunState.load(tmp_path / "run")
    assert state.epoch == tiny_config.epochs and state.clustering is not None
    assert not [f for f in (tmp_path / "run").iterdir() if ".tmp" in f.name]


def test_an_epochs_checkpoint_holds_its_weights_while_the_next_epoch_trains(tiny_config, tmp_path, monkeypatch):
    """The write of epoch 1's checkpoint overlaps epoch 2 (a new head, training steps): what lands is epoch 1's
    state, the state a one-epoch run ends with."""
    import threading

    save, step, stepped, written = RunState.save, torch.optim.SGD.step, threading.Event(), {}

    def counting(self, *a, **k):
        out = step(self, *a, **k)
        stepped.set()
        return out

    def slow(self, path):  # a slow disk: epoch 1's write ends only after epoch 2 has trained a step
        if self.epoch == 1:
            stepped.clear()
            stepped.wait(30)
        written[self.epoch] = {k: v.clone() for k, v in self.model.items()}
        save(self, path)

    monkeypatch.setattr(torch.optim.SGD, "step", counting)
    monkeypatch.setattr(RunState, "save", slow)
    train(dataclasses.replace(tiny_config, epochs=2), tmp_path / "two", quiet=True)
    monkeypatch.undo()
    train(dataclasses.replace(tiny_config, epochs=1), tmp_path / "one", quiet=True)
    one = RunState.load(tmp_path / "one").model
    assert written[1].keys() == one.keys() and all(torch.equal(written[1][k], one[k]) for k in one)


def test_the_closing_evaluation_takes_the_runs_own_features_and_gets_what_it_would_compute(tiny_config, tmp_path):
    """The run hands its closing evaluation the features it already has: the random network's fc, last conv layer
    and clustering input from epoch 1, the trained network's from the final clustering's pass and PCA-whitening.
    The same scores as the evaluation computing everything itself from the saved and a fresh random network."""
    from deepcluster.device import kept_dtype
    from deepcluster.evaluate.closing import evaluate_features
    from deepcluster.network import saved_network
    from deepcluster.session import datasets, input_size
    from deepcluster.train import closing_options

    out = tmp_path / "run"
    ev = train(tiny_config, out, quiet=True)["eval"]
    state = RunState.load(out)
    train_set, _ = datasets(state.config)
    model = saved_network(state, input_size(state.config), train_set.channels, torch.device("cpu"), "the run")
    cpu = torch.device("cpu")
    again = evaluate_features(model, train_set, cpu, closing_options(state.config, cpu, kept_dtype(state.config, cpu)))
    assert again["results"] == ev["results"] and again["knn"] == ev["knn"]
