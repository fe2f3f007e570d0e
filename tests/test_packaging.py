"""The package as users install it: a wheel built from the repo installs into a clean virtual environment (no
site packages) with the dependency ranges it declares, and its command runs a first training there."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepcluster import __version__

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=1200, **kw)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


@pytest.mark.heavy
def test_a_wheel_installs_and_trains_in_a_clean_virtual_environment(tmp_path, image_folder):
    src = tmp_path / "src"  # built from a copy: the build writes its own files beside the sources
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", tmp_path / "dist")
    wheel, = (tmp_path / "dist").glob("deepcluster-*.whl")
    assert wheel.name.startswith(f"deepcluster-{__version__}-")
    venv = tmp_path / "venv"
    try:
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin" / "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel)
        assert run(venv / "bin" / "deepcluster", "--version").stdout.strip() == f"deepcluster {__version__}"
        out = run(venv / "bin" / "deepcluster", "train", "--data", image_folder, "--epochs", "1", "--k", "3",
                  "--image-size", "32", "--device", "cpu", "--out", tmp_path / "run", cwd=tmp_path).stdout
        assert "DeepCluster run in" in out and (tmp_path / "run" / "checkpoint.pt").is_file()
        # the installed package is the wheel's, not the repo's sources
        where = run(venv / "bin" / "python", "-c", "import deepcluster; print(deepcluster.__file__)").stdout
        assert str(venv) in where
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # several GB with torch: not kept among pytest's old tmp dirs
