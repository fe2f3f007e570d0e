"""Kill a real training run at random moments, resume it each time, and check that it ends exactly where an
uninterrupted run ends: same weights, same metrics (times aside), same assignment and evaluation.

Every run is a separate process, started as ``python -m deepcluster train ...`` on one thread (CPU determinism
holds at a fixed thread count). One run goes through untouched; the other is SIGKILLed ``--kills`` times, each
time followed by ``--resume``, then allowed to finish. Each kill waits for a progress stage drawn at random (an
epoch's feature extraction or training, or the closing evaluation) and strikes within half a second of its
start. ``--checkpoint-kills`` more kills land *inside* the writing of a checkpoint: the child's save function
writes half the bytes, then kills its own process.

    .venv/bin/python scripts/fault_injection.py --kills 10 [--data FOLDER] [--out DIR] [-- extra train options]

Without ``--data`` it trains on generated images (three classes of shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

# Runs the CLI in the child; with DC_KILL_IN_SAVE=n the n-th checkpoint save writes half its bytes, then the
# process kills itself with SIGKILL (no cleanup, no flush: what a power cut or the OOM killer does). Its stderr
# passes for a terminal, so that the progress bars, quiet in a pipe, name the stages the kills wait for.
CHILD = """
import os, signal, sys
class Terminal:
    def __init__(self, f): self.f = f
    def isatty(self): return True
    def __getattr__(self, name): return getattr(self.f, name)
sys.stderr = Terminal(sys.stderr)
n = int(os.environ.get("DC_KILL_IN_SAVE", "0"))
if n:
    import deepcluster.checkpoint as ck
    real, calls = ck.atomic_write, [0]
    def dying_write(path, write):
        calls[0] += 1
        if calls[0] < n:
            return real(path, write)
        def half(tmp):
            write(tmp)
            size = os.path.getsize(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, half)
    ck.atomic_write = dying_write
from deepcluster.cli import main
sys.exit(main(sys.argv[1:]))
"""
TIMES = ("time_features", "time_clustering", "time_training")


def make_images(root: Path, per_class: int = 16, size: int = 32) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for kind, name in enumerate(("disk", "hstripe", "vstripe")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            if kind == 0:
                cy, cx, r = *rng.uniform(8, size - 8, 2), rng.uniform(4, 8)
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
            else:
                p = int(rng.integers(4, 8))
                mask = ((yy if kind == 1 else xx) + int(rng.integers(0, p))) % p < p // 2
            img = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 40, 3).astype(np.uint8)
            img[mask] = rng.integers(120, 256, 3)
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    return root


class Child:
    """A training process whose stderr (the progress bars) is collected as it comes."""

    def __init__(self, args: list[str], env: dict):
        self.p = subprocess.Popen([sys.executable, "-c", CHILD, "train", *args], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.err = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.p.stderr.read(64), ""):
            self.err += chunk

    def kill_when(self, token: str, delay: float) -> bool:
        """SIGKILL ``delay`` s after ``token`` first shows in the progress output; False if the run ended
        first."""
        while token not in self.err:
            if self.p.poll() is not None:
                return False
            time.sleep(0.01)
        time.sleep(delay)
        if self.p.poll() is not None:
            return False
        self.p.send_signal(signal.SIGKILL)
        return True

    def wait(self) -> int:
        rc = self.p.wait()
        self.reader.join()
        return rc


def snapshot(run: Path) -> dict:
    from deepcluster.checkpoint import load_checkpoint

    ck = load_checkpoint(run / "checkpoint.pt")
    rows = [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (run / "metrics.jsonl").read_text().splitlines()]
    ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else None
    asg = np.load(run / "assignments.npy") if (run / "assignments.npy").exists() else None
    return {"model": ck["model"], "epoch": ck["epoch"], "rows": rows, "eval": ev, "assignment": asg}


def same(a: dict, b: dict) -> list[str]:
    diffs = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    out = [f"weights differ in {len(diffs)} tensors (e.g. {diffs[0]})"] if diffs else []
    out += [f"{k} differs" for k in ("epoch", "rows", "eval") if a[k] != b[k]]
    if (a["assignment"] is None) != (b["assignment"] is None) or (
            a["assignment"] is not None and not np.array_equal(a["assignment"], b["assignment"])):
        out.append("assignment differs")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10, help="kills at random stages (default 10)")
    ap.add_argument("--checkpoint-kills", type=int, default=2, help="kills inside a checkpoint write (default 2)")
    ap.add_argument("--data", help="image folder (default: generated images)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", help="keep the two runs here (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill stages and delays")
    ap.add_argument("extra", nargs="*", help="more train options, after --")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = Path(a.out or tempfile.mkdtemp(prefix="dc-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    data = a.data or str(make_images(work / "images"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    train_args = ["--data", data, "--epochs", str(a.epochs), "--device", "cpu", "--image-size", "32", "--k", "6",
                  "--batch-size", "16", "--pca-dim", "16", "--eval-seeds", "1", *a.extra]

    ref, hurt = work / "uninterrupted", work / "killed"
    for d in (ref, hurt):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    c = Child([*train_args, "--out", str(ref)], env)
    if c.wait() != 0:
        print(c.err[-2000:])
        raise SystemExit("the uninterrupted run failed")
    print(f"uninterrupted run: {time.perf_counter() - t0:.1f} s; now {a.kills} kills at random stages and "
          f"{a.checkpoint_kills} inside a checkpoint write, each followed by --resume")

    # A kill's stage is drawn at random and it strikes up to half a second into it; extraction, training and the
    # closing evaluation show as progress bars (clustering runs right after the features bar).
    stages = [f"epoch {e} {s}" for e in range(1, a.epochs + 1) for s in ("features", "train")]
    # The closing stage: one pass of the trained network (final clustering, evaluation, report), then the random
    # network's, which shows only when epoch 1 ran in an earlier process (else epoch 1 kept its features).
    stages += ["final features", "eval random-init"]
    # in the order of the run, so that every kill finds its stage still ahead (a resume redoes the epoch it was in)
    picks = sorted(rng.randrange(len(stages)) for _ in range(a.kills))
    plan = [("checkpoint", "")] * a.checkpoint_kills + [("stage", stages[i]) for i in picks]
    landed, hits = 0, []
    for kind, token in plan:
        if kind == "checkpoint":  # this process's next checkpoint save dies half-written
            c = Child([*train_args, "--out", str(hurt), "--resume"], dict(env, DC_KILL_IN_SAVE="1"))
            ok = c.wait() == -signal.SIGKILL
            where = "inside a checkpoint write"
        else:
            c = Child([*train_args, "--out", str(hurt), "--resume"], env)
            ok = c.kill_when(token, rng.uniform(0.0, 0.5))
            c.wait()
            where = token
        if ok:
            landed += 1
            hits.append(where)
        elif c.p.returncode != 0:
            print(c.err[-2000:])
            raise SystemExit(f"a resumed run failed with exit code {c.p.returncode}")
        else:
            hits.append(f"{where} (not reached: that stage was already done)")
    c = Child([*train_args, "--out", str(hurt), "--resume"], env)
    if c.wait() != 0:
        print(c.err[-2000:])
        raise SystemExit("the final resume failed")
    diffs = same(snapshot(ref), snapshot(hurt))
    leftovers = sorted(f.name for f in hurt.iterdir() if ".tmp" in f.name)
    print("kills: " + "; ".join(hits))
    print(f"kills tried {len(plan)}, landed {landed}, resumed {len(plan)}, identical: {not diffs}"
          + ("" if not diffs else " (" + "; ".join(diffs) + ")")
          + (f"; temporary files left: {leftovers}" if leftovers else ""))
    return 0 if not diffs and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
