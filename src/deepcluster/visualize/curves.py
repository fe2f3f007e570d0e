"""Curves of a run over its epochs, as one PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..rundir import atomic_write  # noqa: E402


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Three panels: NMI (and ARI) of the assignment against the labels, NMI against the previous epoch's
    assignment (the paper's Fig. 2a and 2b), and the training loss."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    epochs = [r["epoch"] for r in history]

    def line(ax, key, label, **kw):
        pts = [(e, r[key]) for e, r in zip(epochs, history) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label, **kw)
        return bool(pts)

    ax = axes[0]
    if line(ax, "nmi_labels", "NMI") | line(ax, "ari_labels", "ARI", ls="--"):
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("clusters vs labels")
    axes[1].set_title("NMI(epoch t, epoch t-1)")
    if not line(axes[1], "nmi_prev", "NMI t/t-1"):
        axes[1].text(0.5, 0.5, "needs two epochs", ha="center", va="center", transform=axes[1].transAxes)
    axes[2].set_title("training loss")
    line(axes[2], "loss", "loss", color="C3")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
