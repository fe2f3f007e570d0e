"""One Markdown table from the evaluation results of several runs (the paper's Table 1 shape, plus columns)."""
from __future__ import annotations

import json
from pathlib import Path

from ..settings import ConfigError


def _load(run: Path, random_init: bool) -> dict:
    out = {}
    for p in sorted((run / "eval").glob("*-random.json" if random_init else "*.json")):
        if p.stem.endswith("-random") != random_init:
            continue
        r = json.loads(p.read_text())
        out[r["protocol"]] = r
    return out


def _row(name: str, res: dict, n_conv: int) -> list[str]:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    probe = res.get("probe", {})
    cells = [name] + [pct(probe.get(f"conv{i}")) for i in range(1, n_conv + 1)]
    cells.append(pct(res.get("knn", {}).get("top1")))
    cl = res.get("cluster", {})
    for scores in (cl, cl.get("l2", {})):
        cells += [f"{scores['nmi']:.3f}" if "nmi" in scores else "-", pct(scores.get("acc"))]
    tr = res.get("transfer", {})
    cells += [pct(tr.get("fc")), pct(tr.get("all"))]
    # "retrieval": class retrieval's name in the results of earlier versions
    cells.append(pct(res.get("class-retrieval", res.get("retrieval", {})).get("map")))
    cells.append(pct(res.get("copies", {}).get("map")))
    return cells


def compare_runs(runs: list[str | Path]) -> str:
    """Rows: random init (from the first run evaluated with ``--random-init``), then every run (labelled
    DeepCluster v1/v2 or supervised from its config); columns: probe top-1 per conv layer, kNN top-1, k-means NMI
    and accuracy on PCA-whitened + L2 features (the run's pre-processing) and on L2-normalised ones, transfer
    (fc / all), class retrieval mAP, copy detection mAP. Missing results show as '-'."""
    import yaml

    rows, n_conv, random_row = [], 0, None
    for run in map(Path, runs):
        if not (run / "config.yaml").is_file():
            raise ConfigError(f"{run} is not a run directory (no config.yaml): give folders written by "
                              f"'deepcluster train'")
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        own, rand = _load(run, False), _load(run, True)
        n_conv = max([n_conv] + [sum(k.startswith("conv") for k in r["dims"]) for r in (own.get("probe"),
                                                                                     rand.get("probe")) if r])
        if rand and random_row is None:
            random_row = (f"random init ({cfg['arch']})", rand)
        kind = "supervised" if cfg.get("supervised") else f"DeepCluster {cfg.get('method', 'v1')}"
        rows.append((f"{kind} ({run.name})", own))
    if random_row:
        rows.insert(0, random_row)
    if not any(r for _, r in rows):
        raise ConfigError("no evaluation results in these runs: run 'deepcluster eval all --run RUN_DIR' first")
    n_conv = n_conv or 5
    head = (["features"] + [f"conv{i}" for i in range(1, n_conv + 1)]
            + ["kNN", "k-means NMI", "k-means ACC", "k-means NMI (L2)", "k-means ACC (L2)", "transfer fc",
               "transfer all", "class retrieval mAP", "copy detection mAP"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_row(name, res, n_conv)) + " |" for name, res in rows]
    notes = probe_notes([(name, res.get("probe")) for name, res in rows], n_conv)
    return "\n".join(lines + ([""] + notes if notes else []))


def probe_notes(probes: list[tuple[str, dict | None]], n_conv: int) -> list[str]:
    """Lines under the table that read the probe columns: how the probes were trained, the linear classifier on
    the pixels, the supervised network's own accuracy (what converged probes approach) and the share of the
    random-to-supervised gap each unsupervised run closes at its best layer (the paper's way to read Table 1)."""
    probes = [(name, p) for name, p in probes if p]
    if not probes:
        return []
    pct = lambda v: f"{100 * v:.1f} %"
    layers = [f"conv{i}" for i in range(1, n_conv + 1)]
    first = probes[0][1]
    notes = [f"Probes: {first.get('views', 'augmented')} views, {first.get('epochs')} epochs."]
    if "pixels" in first:
        notes.append(f"A linear classifier on the pixels, trained the same way: {pct(first['pixels'])}.")
    random = next((p for name, p in probes if name.startswith("random init")), None)
    sup = next((p for name, p in probes if name.startswith("supervised")), None)
    if sup and "network" in sup:
        best = max(layers, key=lambda c: sup.get(c, 0))
        notes.append(f"The supervised network's own classifier: {pct(sup['network'])} (its best probe, {best}: "
                     f"{pct(sup[best])}).")
    if random and sup:
        for name, p in probes:
            if name.startswith(("random init", "supervised")):
                continue
            gaps = {c: (p[c] - random[c]) / (sup[c] - random[c]) for c in layers
                    if c in p and c in random and c in sup and sup[c] > random[c]}
            if gaps:
                best = max(gaps, key=lambda c: p[c])
                notes.append(f"{name}: best layer {best}, {pct(p[best])}, closes {100 * gaps[best]:.0f} % of the "
                             f"random-to-supervised gap there.")
    return notes
