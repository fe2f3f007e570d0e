"""Curves of a run over its epochs, as one figure."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..rundir import atomic_write  # noqa: E402

# (title, [(metrics key, legend)], message when no epoch has the key)
PANELS = (
    ("clusters vs labels", [("nmi_labels", "NMI"), ("ari_labels", "ARI")], "no labels"),
    ("NMI(epoch t, epoch t-1)", [("nmi_prev", "NMI t/t-1")], "needs two epochs"),
    ("training loss", [("loss", "loss")], "no epoch yet"),
    ("number of clusters", [("clusters", "clusters")], "no clustering"),
    ("k-means objective (per image)", [("kmeans_objective", "objective")], "not k-means"),
    ("clusters repaired", [("empty_resplit", "empty, re-split"), ("singletons_moved", "singletons moved")],
     "no clustering"),
    ("cluster-size imbalance", [("imbalance", "imbalance (1 = equal sizes)")], "no clustering"),
    ("seconds per epoch", [("time_features", "features"), ("time_clustering", "clustering"),
                           ("time_training", "training")], "no timing"),
)


def plot_curves(history: list[dict], path: Optional[str | Path] = None):
    """Eight panels over the epochs: NMI and ARI of the assignment against the labels (the paper's Fig. 2a), NMI
    against the previous epoch's assignment (Fig. 2b), the training loss, the number of clusters, the k-means
    objective, the clusters repaired (empty ones re-split by k-means, singletons moved by PIC), the
    cluster-size imbalance and the time of each stage. Panels without data say why. Saved as PNG to ``path``
    when given; returns the figure (close it with ``plt.close``)."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.4))
    epochs = [r["epoch"] for r in history]
    for ax, (title, keys, missing) in zip(axes.flat, PANELS):
        drawn = False
        for i, (key, label) in enumerate(keys):
            pts = [(e, r[key]) for e, r in zip(epochs, history) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ls="--" if i else "-", label=label, color=f"C{i}")
                drawn = True
        if drawn and len(keys) > 1:
            ax.legend()
        if not drawn:
            ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return fig
