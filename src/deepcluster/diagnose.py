"""Did the run learn? Plain-language findings from its metrics and its closing evaluation, each with what to
change, for the summary and the report. A run that learned gets none. Differences smaller than what a seed alone
moves (measured on the benchmark folders of ``benchmarks/learning.py``) are ties, and named as such."""
from __future__ import annotations

import math

# A loss within this fraction of chance (ln k, or the mean of ln k over the heads) is chance: the head predicts the
# pseudo-labels no better than uniformly (the runs that never learned sat at 0.999 ln k).
CHANCE_LOSS = 0.9
# Pseudo-labels that agree with the previous epoch's less than this (NMI) after the first epochs keep changing.
UNSTABLE_NMI = 0.5
# The largest difference one seed made between two runs of the defaults on one folder (benchmarks/learning.py,
# docs/recipe.md): a trained network closer than this to a baseline is not shown to be better.
NMI_SPREAD = 0.06
KNN_SPREAD = 0.04
# Imbalance factor (k * sum n_i^2 / N^2: 1 for equal clusters, k for one holding everything) of the last clustering
# above which a few clusters hold most images; the benchmark's runs stayed below 1.5 at every epoch.
IMBALANCED = 3.0


def chance_loss(row: dict) -> float:
    """The cross-entropy of a uniform guess for the epoch's heads: ln k, or the mean of ln k over several heads."""
    heads = row.get("heads", [row["clusters"]])
    return sum(math.log(max(int(k), 2)) for k in heads) / len(heads)


def learning_problems(history: list[dict], evaluation: dict | None = None) -> list[str]:
    """What went wrong in a DeepCluster run, one sentence each: a loss that stayed at chance, pseudo-labels that
    keep changing, clusters of very unequal sizes, trained features that cluster or vote no better than a baseline
    of the same closing table (within the seed-to-seed spread: a tie is named too)."""
    rows = [r for r in history if "clusters" in r]  # DeepCluster epochs (not the supervised baseline)
    out = []
    if rows:
        last = rows[-1]
        chance = chance_loss(last)
        if last["loss"] > CHANCE_LOSS * chance:
            out.append(f"the training loss stayed at chance ({last['loss']:.3f}, chance {chance:.3f}): the network "
                       f"did not learn to predict its clusters; give it more steps between clusterings (--reassign, "
                       f"a smaller --batch-size) or a higher --lr")
        prev = [r["nmi_prev"] for r in rows[2:] if r.get("nmi_prev") is not None]
        if prev and prev[-1] < UNSTABLE_NMI:
            out.append(f"the pseudo-labels keep changing (NMI against the previous epoch {prev[-1]:.2f} at epoch "
                       f"{rows[-1]['epoch']}): lower --lr, use --lr-schedule cosine, or train more epochs")
        if last.get("imbalance", 1.0) > IMBALANCED:
            out.append(f"the clusters are very unequal (imbalance {last['imbalance']:.1f}: 1 when equal, "
                       f"{last['clusters']} when one holds every image): a few clusters hold most images, so the "
                       f"pseudo-labels say little about them; try a smaller --k or --pca-dim")
    results = (evaluation or {}).get("results", [])
    trained = [r for r in results if r["features"] == "trained"]
    others = [r for r in results if r["features"] != "trained"]
    if trained and others:
        best, rival = max(trained, key=lambda r: r["nmi"]), max(others, key=lambda r: r["nmi"])
        if best["nmi"] < rival["nmi"] + NMI_SPREAD:
            how = "worse than" if best["nmi"] < rival["nmi"] - NMI_SPREAD else "no better than"
            out.append(f"the trained features cluster {how} {rival['features']} ({rival['preprocessing']}): NMI "
                       f"{best['nmi']:.3f} against {rival['nmi']:.3f}, where one seed moves it by up to "
                       f"{NMI_SPREAD}; see the points above, or try --no-sobel for colour images, more --epochs, "
                       f"another --k")
    knn: dict[str, dict] = {}  # features -> their best layer's kNN row
    for r in (evaluation or {}).get("knn", {}).get("results", []):
        if r["top1"] > knn.get(r["features"], {"top1": -1})["top1"]:
            knn[r["features"]] = r
    mine = knn.get("trained")
    close = [r for name, r in knn.items() if mine is not None and name != "trained"
             and r["top1"] > mine["top1"] - KNN_SPREAD]
    if close:
        below = any(r["top1"] > mine["top1"] + KNN_SPREAD for r in close)
        rivals = " and ".join(f"{r['features']} {r['layer']} ({r['top1']:.3f})" for r in close)
        out.append(f"the trained features' best kNN accuracy ({mine['layer']}: {mine['top1']:.3f}) is "
                   f"{'below' if below else 'no better than'} that of {rivals}, where one seed moves it by up to "
                   f"{KNN_SPREAD}: training " + ("lost finer structure a neighbour search needs" if below else
                                                 "added nothing a neighbour search can see"))
    return out


UNLABELLED = ("no labelled images: the closing evaluation was skipped. Without labels this run can tell whether the "
              "network learned to predict its clusters (the loss), whether they settled (NMI against the previous "
              "epoch) and how equal their sizes are, not whether they match the kinds of images you care about: "
              "look at the report's cluster pictures, or give a labelled folder with --val-data")
