"""Does a change leave training exactly as it was? Three short runs on the built-in data (DeepCluster v1, v2 and
the supervised baseline: 2 epochs on 5,000 images), recorded as what they leave (the weights, the metrics without
their times, the closing evaluation, the assignment), and compared with the record made at another commit: a
restructuring that changes no behaviour leaves every one bit-identical.

    .venv/bin/python scripts/same_runs.py RECORD.pt                    # at the commit before the change
    .venv/bin/python scripts/same_runs.py NEW.pt --against RECORD.pt   # after it: exits 1 on any difference

Each run is its own process on two threads (CPU results repeat at a fixed thread count).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_injection import same, snapshot  # noqa: E402

COMMON = ["--data", "fashion-mnist", "--subset", "5000", "--epochs", "2", "--device", "cpu", "--no-report",
          "--seed", "3"]
RUNS = {"v1": [], "v2": ["--method", "v2"], "supervised": ["--supervised"]}


def record(work: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    out = {}
    for name, extra in RUNS.items():
        run = work / name
        cmd = [sys.executable, "-m", "deepcluster", "train", *COMMON, *extra, "--out", str(run)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: the run failed:\n{done.stderr[-2000:]}")
        out[name] = snapshot(run)
        print(f"{name}: recorded ({len(out[name]['rows'])} epochs)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", type=Path, help="where this commit's record goes")
    ap.add_argument("--against", type=Path, help="a record made at another commit, to compare with")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dc-same-") as work:
        now = record(Path(work))
    torch.save(now, a.record)
    if a.against is None:
        return 0
    then = torch.load(a.against, weights_only=False)
    bad = 0
    for name in RUNS:
        diffs = same(then[name], now[name])
        bad += bool(diffs)
        print(f"{name}: {'identical' if not diffs else '; '.join(diffs)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
