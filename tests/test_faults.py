"""Crash safety: the fault-injection script kills a real training run (SIGKILL) at chosen stages and inside a
checkpoint write, resumes it each time, and the run ends identical to one never interrupted."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # runs the fault-injection script in processes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_injection.py"


def test_killed_and_resumed_run_ends_identical(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--kills", "2", "--checkpoint-kills", "1", "--epochs", "2",
                          "--seed", "3", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert "kills tried 3, landed 3, resumed 3, identical: True" in out.stdout, out.stdout
    assert "inside a checkpoint write" in out.stdout
    assert not [f for f in (tmp_path / "killed").iterdir() if ".tmp" in f.name]
