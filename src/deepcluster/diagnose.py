"""Did the run learn? Plain-language findings from its metrics and its closing evaluation, each with what to
change, for the summary and the report. A run that learned gets none."""
from __future__ import annotations

import math

# A loss within this fraction of ln(clusters) is chance: the head predicts the pseudo-labels no better than
# uniformly (the runs that never learned sat at 0.999 ln k).
CHANCE_LOSS = 0.9
# Pseudo-labels that agree with the previous epoch's less than this (NMI) after the first epochs keep changing.
UNSTABLE_NMI = 0.5


def learning_problems(history: list[dict], evaluation: dict | None = None) -> list[str]:
    """What went wrong in a DeepCluster run, one sentence each: a loss that stayed at chance, pseudo-labels
    that keep changing, trained features that cluster worse than a baseline of the same closing table."""
    rows = [r for r in history if "clusters" in r]  # DeepCluster epochs (not the supervised baseline)
    out = []
    if rows:
        last = rows[-1]
        chance = math.log(max(int(last["clusters"]), 2))
        if last["loss"] > CHANCE_LOSS * chance:
            out.append(f"the training loss stayed at chance ({last['loss']:.3f}, ln {last['clusters']} = "
                       f"{chance:.3f}): the network did not learn to predict its clusters; give it more steps "
                       f"between clusterings (--reassign, a smaller --batch-size) or a higher --lr")
        prev = [r["nmi_prev"] for r in rows[2:] if r.get("nmi_prev") is not None]
        if prev and prev[-1] < UNSTABLE_NMI:
            out.append(f"the pseudo-labels keep changing (NMI against the previous epoch {prev[-1]:.2f} at epoch "
                       f"{rows[-1]['epoch']}): lower --lr, use --lr-schedule cosine, or train more epochs")
    results = (evaluation or {}).get("results", [])
    trained = [r for r in results if r["features"] == "trained"]
    others = [r for r in results if r["features"] != "trained"]
    if trained and others:
        best, rival = max(trained, key=lambda r: r["nmi"]), max(others, key=lambda r: r["nmi"])
        if best["nmi"] < rival["nmi"]:
            out.append(f"the trained features cluster worse than {rival['features']} ({rival['preprocessing']}): "
                       f"NMI {best['nmi']:.3f} against {rival['nmi']:.3f}; see the points above, or try "
                       f"--no-sobel for colour images, more --epochs, another --k")
    knn: dict[str, dict] = {}  # features -> their best layer's kNN row
    for r in (evaluation or {}).get("knn", {}).get("results", []):
        if r["top1"] > knn.get(r["features"], {"top1": -1})["top1"]:
            knn[r["features"]] = r
    mine = knn.get("trained")
    beaten = [f"{r['features']} {r['layer']} ({r['top1']:.3f})" for name, r in knn.items()
              if mine is not None and name != "trained" and r["top1"] > mine["top1"]]
    if beaten:
        out.append(f"the trained features' best kNN accuracy ({mine['layer']}: {mine['top1']:.3f}) is below that "
                   f"of {' and '.join(beaten)}: training lost finer structure a neighbour search needs")
    return out
