"""Pictures of a run's groups: the curve that says how many groups the images form, and the top of the tree over
them with a few images under each node, to browse from coarse to fine."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402

from ..clustering.number import Choice  # noqa: E402
from ..export.groups import Tree, group_means  # noqa: E402
from .grids import to_rgb  # noqa: E402


def curve_figure(choice: Choice):
    """The criterion over K with its noise band; the chosen K and the best marked, the range within noise
    shaded."""
    ks, s, e = np.array(choice.ks), np.array(choice.scores), np.array(choice.noise)
    fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
    ax.axvspan(choice.low - 0.5, choice.high + 0.5, color="#e8a33d", alpha=0.2, label="within noise of the best")
    ax.fill_between(ks, s - e, s + e, color="#4c72b0", alpha=0.25, linewidth=0)
    ax.plot(ks, s, color="#4c72b0", marker=".", label=choice.criterion)
    ax.axvline(choice.k, color="#c44e52", linestyle="--", label=f"chosen K = {choice.k} (the fewest within noise)")
    if choice.best != choice.k:
        i = choice.ks.index(choice.best)
        ax.plot([choice.best], [s[i]], "*", color="#c44e52", markersize=11, label=f"best K = {choice.best}")
    ax.set_xlabel("number of groups K (cuts of the tree)")
    ax.set_ylabel(choice.criterion)
    ax.set_title(f"K = {choice.k} chosen; the best score at K = {choice.best}; within noise: {choice.low}-"
                 f"{choice.high}" + (" (a flat curve)" if choice.flat else "") +
                 (" (still rising at the end)" if choice.at_edge else ""), fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return fig


def tree_figure(tree: Tree, features: np.ndarray, dataset, top: int = 12, per_node: int = 4):
    """The last ``top`` groups of the tree (scipy's dendrogram, truncated) and, under each, the ``per_node``
    images nearest its mean in the clustering space, with its number of images."""
    top = max(2, min(top, tree.leaves))
    fig = plt.figure(figsize=(1.05 * top, 2.2 + 1.05 * per_node))
    grid = fig.add_gridspec(1 + per_node, top, height_ratios=[2.2] + [1] * per_node, hspace=0.12, wspace=0.05,
                            left=0.07, right=0.99, top=0.93, bottom=0.01)
    ax = fig.add_subplot(grid[0, :])
    shown = dendrogram(tree.z, p=top, truncate_mode="lastp", ax=ax, no_labels=True, color_threshold=0,
                       above_threshold_color="#555")
    ax.set_xlim(0, 10 * top)
    ax.set_ylabel("Ward merge height")
    ax.set_title(f"the top of the tree: {top} groups of {len(tree.leaf_of)} images ({tree.leaves} leaves); "
                 f"left to right as merged", fontsize=9)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    members = _node_leaves(tree)
    group_of_leaf = np.empty(tree.leaves, np.int64)
    for col, node in enumerate(shown["leaves"]):
        group_of_leaf[members[node]] = col
    groups = group_of_leaf[tree.leaf_of]
    means = group_means(features, groups, top)
    for col in range(top):
        idx = np.flatnonzero(groups == col)
        d = ((np.asarray(features[idx], np.float32) - means[col]) ** 2).sum(1)
        nearest = idx[np.argsort(d, kind="stable")[:per_node]]
        for row in range(per_node):
            a = fig.add_subplot(grid[1 + row, col])
            a.set_axis_off()
            if row < len(nearest):
                a.imshow(to_rgb(dataset[int(nearest[row])][0].numpy()), interpolation="nearest")
            if row == 0:
                a.set_title(f"{len(idx)}", fontsize=8)
    return fig


def _node_leaves(tree: Tree) -> dict[int, list[int]]:
    """Every node of the tree (leaf i, merge i as L + i) -> the leaves under it."""
    L = tree.leaves
    members = {i: [i] for i in range(L)}
    for i, (a, b) in enumerate(tree.z[:, :2].astype(int)):
        members[L + i] = members[a] + members[b]
    return members
