"""Figures of one clustering: cluster sizes, clusters against labels, and a 2-D map of the features."""
from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..preprocess import PCAWhitening  # noqa: E402
from .grids import cluster_purity  # noqa: E402


def png_bytes(fig_or_image, dpi: int = 100) -> bytes:
    """A matplotlib figure (closed afterwards) or a PIL image, encoded as PNG."""
    buf = io.BytesIO()
    if hasattr(fig_or_image, "savefig"):
        fig_or_image.savefig(buf, format="png", dpi=dpi)
        plt.close(fig_or_image)
    else:
        fig_or_image.save(buf, format="PNG")
    return buf.getvalue()


def cluster_sizes_figure(assignment: np.ndarray, k: Optional[int] = None):
    """Cluster sizes sorted from largest to smallest, with the size every cluster would have if equal, and a
    log scale when sizes span more than a factor of 50."""
    sizes = np.sort(np.bincount(assignment, minlength=k or 0))[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(np.arange(len(sizes)), sizes, width=1.0, color="C0")
    ax.axhline(len(assignment) / len(sizes), color="C3", ls="--", label="equal sizes")
    if sizes.min() > 0 and sizes.max() / sizes.min() > 50 or sizes.min() == 0 and sizes.max() > 50:
        ax.set_yscale("symlog", linthresh=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"clusters, largest first ({len(sizes)}, {int((sizes == 0).sum())} empty)")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title("cluster sizes")
    fig.tight_layout()
    return fig


def confusion_figure(assignment: np.ndarray, targets: np.ndarray, classes: Sequence[str] = (),
                     max_clusters: int = 100):
    """Share of each label in each cluster (columns sum to 1). Clusters are ordered by their most common
    label, purest first within a label, so a good clustering shows a staircase; only the ``max_clusters``
    largest are drawn."""
    sizes, top, purity = cluster_purity(assignment, targets)
    ids = np.flatnonzero(sizes)
    if len(ids) > max_clusters:
        ids = np.sort(ids[np.argsort(-sizes[ids], kind="stable")[:max_clusters]])
    ids = ids[np.lexsort((-purity[ids], top[ids]))]
    n_labels = int(targets.max()) + 1
    table = np.zeros((n_labels, len(ids)))
    for c, j in enumerate(ids):
        table[:, c] = np.bincount(targets[assignment == j], minlength=n_labels) / sizes[j]
    fig, ax = plt.subplots(figsize=(min(13, 3 + 0.18 * len(ids)), 1.2 + 0.32 * n_labels))
    im = ax.imshow(table, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(n_labels))
    ax.set_yticklabels([classes[i] if i < len(classes) else str(i) for i in range(n_labels)])
    if len(ids) <= 40:
        ax.set_xticks(range(len(ids)))
        ax.set_xticklabels([str(j) for j in ids], rotation=90, fontsize=7)
    shown = "" if len(ids) == len(np.flatnonzero(sizes)) else f", the {len(ids)} largest"
    ax.set_xlabel(f"cluster{shown} (ordered by main label)")
    ax.set_title("share of each label in each cluster")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def _row_affinities(d2: torch.Tensor, perplexity: float, steps: int = 64, tol: float = 1e-5) -> torch.Tensor:
    """Conditional affinities ``p(j|i) ~ exp(-beta_i d2_ij)``, each row's ``beta_i`` found by bisection (all rows
    at once) so that its perplexity ``2^H(P_i)`` equals ``perplexity`` (every row's entropy within ``tol`` nats,
    as scikit-learn's search, or ``steps`` halvings)."""
    n = d2.shape[0]
    target = math.log(perplexity)
    lo = torch.zeros(n, 1, dtype=d2.dtype)
    hi = torch.full((n, 1), math.inf, dtype=d2.dtype)
    beta = torch.ones(n, 1, dtype=d2.dtype)
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(steps):
        logits = (-d2 * beta).masked_fill_(eye, -math.inf)
        p = torch.softmax(logits, 1)
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1, keepdim=True)  # natural log
        if (entropy - target).abs().max() < tol:
            break
        too_flat = entropy > target  # too many neighbours: sharpen (raise beta)
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    return p


def tsne_map(features: np.ndarray, perplexity: float = 30.0, iters: int = 750) -> np.ndarray:
    """``(n, D)`` -> ``(n, 2)`` t-SNE map (van der Maaten and Hinton, 2008) with the exact gradient, written in
    torch: for the few thousand points of a report it is much faster than Barnes-Hut on a CPU. Features are
    first reduced to at most 50 dims by PCA; the optimiser follows the paper's schedule (early exaggeration 12
    for 250 steps, momentum 0.5 then 0.8, per-coordinate gains) and starts from the 2-D PCA, so the map is
    deterministic."""
    n = len(features)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    x = torch.from_numpy(PCAWhitening(50, whiten=False).fit_transform(features).astype(np.float64))
    d2 = torch.cdist(x, x).square()
    d2 = d2 / d2.max().clamp_min(1e-12)
    p = _row_affinities(d2, float(min(perplexity, (n - 1) / 3)))
    p = ((p + p.T) / (2 * n)).clamp_min(1e-12).float()
    early = p * 12.0  # early exaggeration
    y = x[:, :2].float()
    y = y / y[:, 0].std().clamp_min(1e-12) * 1e-4
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    y1 = torch.ones(n, 3)  # (y, 1): one product gives both sums of the gradient
    lr = max(n / 12 / 4, 50.0)
    for it in range(iters):
        target, momentum = (early, 0.5) if it < 250 else (p, 0.8)
        sq = (y * y).sum(1, keepdim=True)
        # Student-t kernel 1 / (1 + |y_i - y_j|^2), in place: the n x n passes are what a step costs
        num = torch.addmm(sq + 1, y, y.T, alpha=-2).add_(sq.T).clamp_min_(1).reciprocal_()
        num.fill_diagonal_(0.0)
        w = torch.sub(target, num, alpha=1 / num.sum().item()).mul_(num)  # (P - Q) * kernel
        y1[:, :2] = y
        sums = w @ y1  # (sum_j w_ij y_j, sum_j w_ij)
        grad = 4.0 * (sums[:, 2:] * y - sums[:, :2])
        gains = torch.where((grad > 0) == (update > 0), gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
    return (y - y.mean(0)).float().numpy()


def _scatter(ax, xy: np.ndarray, colour: np.ndarray, names: Optional[Sequence[str]], title: str) -> None:
    ids = np.unique(colour)
    legend = len(ids) <= 20
    cmap = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20" if legend else "nipy_spectral")
    for n, j in enumerate(ids):
        m = colour == j
        c = cmap(n) if legend else cmap(n / max(len(ids) - 1, 1))
        name = (names[j] if names is not None and j < len(names) else str(j)) if legend else None
        ax.scatter(xy[m, 0], xy[m, 1], s=5 if len(xy) > 300 else 20, color=c, label=name)
    if legend:
        ax.legend(fontsize=7, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def embedding_figure(xy: np.ndarray, clusters: np.ndarray, targets: Optional[np.ndarray] = None,
                     classes: Sequence[str] = ()):
    """The 2-D map coloured by cluster and, when labels exist, side by side by label."""
    panels = 2 if targets is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5), squeeze=False)
    _scatter(axes[0, 0], xy, clusters, None, f"coloured by cluster ({len(np.unique(clusters))})")
    if targets is not None:
        _scatter(axes[0, 1], xy, targets, classes or None, "coloured by label")
    fig.tight_layout()
    return fig


def epoch_nmi_figure(epochs: Sequence[int], m: np.ndarray):
    """The NMI between the clusters of every two epochs as a heat map (lower triangle), values written in when
    there are few epochs: how far the clustering moves from one epoch to the next, and over longer spans."""
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    shown = np.where(np.tril(np.ones_like(m, bool)), m, np.nan)
    im = ax.imshow(shown, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(epochs)), epochs, rotation=90 if len(epochs) > 10 else 0, fontsize=8)
    ax.set_yticks(range(len(epochs)), epochs, fontsize=8)
    if len(epochs) <= 12:
        for a in range(len(epochs)):
            for b in range(a):
                ax.text(b, a, f"{m[a, b]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[a, b] < 0.6 else "black")
    ax.set_xlabel("epoch")
    ax.set_ylabel("epoch")
    ax.set_title("NMI between the clusters of two epochs")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
