"""The run state and its checkpoint format: one written by this project before :class:`RunState` existed
(``tests/fixtures/legacy-v2``: a DeepCluster-v2 run of one epoch on 12 generated 16 px images, written by the code of
commit 4eda8ac) still loads, resumes, evaluates and reports; a state written today reads back the same."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepcluster.checkpoint import load_checkpoint
from deepcluster.cli import main
from deepcluster.config import ConfigError
from deepcluster.session import open_run
from deepcluster.state import RunState

LEGACY = Path(__file__).parent / "fixtures" / "legacy-v2"
LEGACY_KEYS = {"format", "epoch", "config", "arch", "model", "head_classes", "optimizer", "assignment", "bank"}


@pytest.fixture
def legacy_run(tmp_path, monkeypatch) -> Path:
    """A copy of the legacy run beside its images (its config names them by the relative path ``images``)."""
    shutil.copytree(LEGACY / "images", tmp_path / "images")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "config.yaml", "metrics.jsonl"):
        shutil.copy(LEGACY / name, run / name)
    monkeypatch.chdir(tmp_path)
    return run


def test_a_checkpoint_written_before_the_run_state_loads(legacy_run):
    state = RunState.load(legacy_run)
    assert state.epoch == 1 and state.config.method == "v2" and state.head_classes == 3
    assert state.assignment.shape == (12,) and set(state.assignment) <= {0, 1, 2}
    assert state.bank.shape == (12, 4)
    torch.testing.assert_close(state.bank.norm(dim=1), torch.ones(12))
    run = open_run(legacy_run, device="cpu")
    assert run.model.head.prototypes.shape == (3, 4)
    assert torch.equal(run.model.head.prototypes, state.model["head.prototypes"])


def test_a_saved_state_reads_back_the_same_in_the_same_format(legacy_run, tmp_path):
    state = RunState.load(legacy_run)
    state.save(tmp_path / "again.pt")
    raw = load_checkpoint(tmp_path / "again.pt")
    assert set(raw) == LEGACY_KEYS == set(load_checkpoint(legacy_run / "checkpoint.pt"))
    back = RunState.load(tmp_path / "again.pt")
    assert back.config == state.config and back.epoch == state.epoch
    assert np.array_equal(back.assignment, state.assignment) and torch.equal(back.bank, state.bank)
    assert all(torch.equal(back.model[k], v) for k, v in state.model.items())
    assert back.optimizer["param_groups"] == state.optimizer["param_groups"]


def test_a_legacy_run_resumes_evaluates_and_reports(legacy_run, capsys):
    assert main(["train", "--config", str(legacy_run / "config.yaml"), "--out", str(legacy_run), "--resume",
                 "--epochs", "2", "--no-report", "--device", "cpu"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    state = RunState.load(legacy_run)
    assert state.epoch == 2 and state.bank.shape == (12, 4)
    assert main(["eval", "knn", "--run", str(legacy_run), "--val-data", "images", "--device", "cpu"]) == 0
    assert main(["report", str(legacy_run), "--device", "cpu"]) == 0
    assert (legacy_run / "report" / "index.html").stat().st_size > 0


def test_a_file_that_is_not_a_run_state_is_one_line(tmp_path):
    torch.save({"format": "deepcluster/1", "epoch": 3}, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="lacks config, model, head_classes"):
        RunState.load(tmp_path / "partial.pt")
