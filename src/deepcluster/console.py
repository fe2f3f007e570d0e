"""What a run prints: one line per epoch and the closing summary."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .diagnose import UNLABELLED, learning_problems
from .evaluate.clustering import kmeans_protocol, scored_images
from .rundir import RUN_FILES


def fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def epoch_line(r: dict) -> str:
    if "time_features" not in r:  # supervised baseline
        return f"epoch {r['epoch']:3d}  loss {r['loss']:.3f}  time {r['time_training']:.0f} s"
    repair = (f"re-split {r['empty_resplit']}" if "empty_resplit" in r else
              f"clusters {r['clusters']} (singletons moved {r.get('singletons_moved', 0)})")
    return (f"epoch {r['epoch']:3d}  loss {r['loss']:.3f}  NMI(labels) {fmt(r.get('nmi_labels'))}  "
            f"NMI(t-1) {fmt(r.get('nmi_prev'))}  {repair}  imbalance {r['imbalance']:.2f}  "
            f"time {r['time_features']:.0f}+{r['time_clustering']:.0f}+{r['time_training']:.0f} s")


def summary_table(history: list[dict], evaluation: dict, run_dir: Path, timing: Optional[dict] = None,
                  precisions: Optional[str] = None, skipped: bool = False) -> str:
    """The closing summary. ``timing``: where this call of training spent its time (``train.Clock.record``:
    the seconds in all and by part: data, epochs, checkpoints, the final clustering, evaluation, reports).
    ``precisions``: what the run computed in, in words; ``skipped``: the evaluation was turned off."""
    lines = ["", f"DeepCluster run in {run_dir}"] + ([f"  computed in: {precisions}"] if precisions else [])
    if history:
        last = history[-1]
        secs = sum(r.get("time_features", 0) + r.get("time_clustering", 0) + r["time_training"] for r in history)
        whole = f"; this command {timing['seconds'] / 60:.1f} min in all" if timing is not None else ""
        lines.append(f"  {len(history)} epochs: {secs / 60:.1f} min of extraction, clustering and training{whole}")
        lines.append(f"  last epoch: loss {last['loss']:.3f}, NMI vs labels {fmt(last.get('nmi_labels'))}, "
                     f"NMI vs previous {fmt(last.get('nmi_prev'))}")
    if timing is not None:
        parts = {k: v for k, v in timing["parts"].items() if k != "epochs" and v >= 0.05}
        lines.append("  besides the epochs: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
    if evaluation:
        lines += [f"  k-means (k = {evaluation['k']}, {kmeans_protocol(evaluation)}) on {evaluation['split']}"
                  f" ({scored_images(evaluation)}):",
                  "  | features    | pre-processing           |   NMI |   ARI |   ACC |",
                  "  |-------------|--------------------------|-------|-------|-------|"]
        for r in evaluation["results"]:
            lines.append(f"  | {r['features']:<11} | {r['preprocessing']:<24} | {r['nmi']:.3f} | {r['ari']:.3f} "
                         f"| {r['acc']:.3f} |")
        if evaluation.get("knn"):
            kn = evaluation["knn"]
            votes = kn["database"] + (f", {kn['database_images']:,} images" if "database_images" in kn else "")
            lines.append(f"  kNN top-1 (k = {kn['k']}, cosine; votes from {votes}): " + ", ".join(
                f"{r['features']} {r['layer']} {r['top1']:.3f}" for r in kn["results"]))
    else:
        lines.append("  closing evaluation: skipped (--eval none)" if skipped else f"  {UNLABELLED}")
    lines += [f"  warning: {problem}" for problem in learning_problems(history, evaluation)]
    lines.append("  files: " + " ".join(f for f in RUN_FILES + ("tensorboard/",) if (run_dir / f).exists()))
    return "\n".join(lines)
