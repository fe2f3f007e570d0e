"""What :func:`deepcluster.device.keep_freed_memory` saves on a CPU: AlexNet at 224 px, batch 256, timed with the C
library's malloc as it comes and with freed memory kept, side by side in one run.

    .venv/bin/python benchmarks/allocator.py [--rounds 2] [--batch 256] [--steps 2]

Each measurement is a fresh process (malloc's settings hold for a whole process), alternating the two settings
``--rounds`` times so that the machine's load falls on both alike. A process times ``--steps`` training steps (SGD
with momentum, cross-entropy on 10 classes) and as many extraction passes of a batch (eval mode, BatchNorm
folded), after one of each to warm up, and reports its page faults and its peak memory. Prints the medians and
the ratios (kept / as it comes).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(keep: bool, batch: int, steps: int) -> dict:
    """One process's timings: seconds per training step and per extraction batch, page faults, peak RSS (GiB)."""
    import torch
    import torch.nn.functional as F

    from deepcluster.device import keep_freed_memory
    from deepcluster.models import build_model

    applied = keep_freed_memory() if keep else False
    torch.manual_seed(0)
    model = build_model("alexnet", 3, 224, n_classes=10)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(fn):
        fn()  # warm-up
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t) / steps

    model.train()
    train = timed(step)
    model.eval()
    embed = model.inference_embed()
    with torch.inference_mode():
        extract = timed(lambda: embed(x))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"applied": applied, "train": train, "extract": extract, "faults": usage.ru_minflt,
            "peak_gib": usage.ru_maxrss / 2 ** 20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--child", choices=("default", "keep"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "keep", args.batch, args.steps)))
        return
    runs = {"default": [], "keep": []}
    for r in range(args.rounds):
        for name in runs:
            out = subprocess.run([sys.executable, __file__, "--child", name, "--batch", str(args.batch), "--steps",
                                  str(args.steps)], check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.splitlines()[-1]))
            print(f"round {r + 1}, {name}: {runs[name][-1]}", file=sys.stderr)
    med = {name: {k: statistics.median(m[k] for m in ms) for k in ("train", "extract", "faults", "peak_gib")}
           for name, ms in runs.items()}
    if not all(m["applied"] for m in runs["keep"]):
        print("keep_freed_memory() did not apply here (not glibc): both columns ran alike")
    print(f"AlexNet 224 px, batch {args.batch}, medians of {args.rounds} processes each")
    print("| measure | malloc as it comes | freed memory kept | kept / as it comes |")
    print("|---|---:|---:|---:|")
    for key, name, fmt in (("train", "training step, s", ".2f"), ("extract", "extraction batch, s", ".2f"),
                           ("faults", "page faults", ",.0f"), ("peak_gib", "peak memory, GiB", ".2f")):
        a, b = med["default"][key], med["keep"][key]
        print(f"| {name} | {a:{fmt}} | {b:{fmt}} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
