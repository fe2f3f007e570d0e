"""A tree over a whole dataset: its features clustered finely (the leaves), then the leaves merged bottom-up by
Ward's criterion, each leaf weighing as many points as it holds. Cutting the tree at any K gives K groups without
touching the points again; cuts at several K nest, so a user can browse from coarse to fine (the hierarchical
k-means of data-curation pipelines, Vo et al. 2024, with the upper levels found by Ward linkage).

The merge order is scipy's linkage format, so that ``scipy.cluster.hierarchy`` can draw or cut it too.
"""
from __future__ import annotations

import math

import numpy as np

LEAVES_PER_SQRT_N = 4  # leaves: 4 sqrt(N) (980 for 60,000 points, 113 for 800), never fewer than the training's k
MAX_LEAVES = 2000  # the merge table is leaves^2 float64: 32 MB at 2,000


def leaf_count(n: int, k: int = 2) -> int:
    """How many leaves a tree over ``n`` points gets: far more than anyone asks for of a dataset that size
    (4 sqrt(n), at most 2,000), never fewer than ``k`` (the training's clusters), never more than ``n``."""
    return int(min(n, max(k, min(MAX_LEAVES, math.ceil(LEAVES_PER_SQRT_N * math.sqrt(n))))))


def ward_tree(centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Ward's agglomerative clustering of ``L`` weighted points: ``centroids (L, d)`` holding ``sizes (L,)``
    points each. Returns scipy's linkage matrix ``(L - 1, 4)``: the two clusters merged (a leaf is its index, the
    cluster made by row ``i`` is ``L + i``), the merge height and the leaves under the merge (scipy's count of
observations, so that its dendrogram draws it), heights non-decreasing.

    The height of merging A and B is sqrt(2 n_A n_B / (n_A + n_B)) ||c_A - c_B||, scipy's convention: with unit
    sizes the tree is scipy's ``linkage(x, "ward")``, and a leaf of n points merges as n copies of its centroid
    would. Found by the nearest-neighbour chain (Ward's criterion is reducible, so the chain's merges, sorted by
    height, are the greedy algorithm's), with the Lance-Williams update: O(L^2) time and memory."""
    c = np.asarray(centroids, np.float64)
    n = np.asarray(sizes, np.float64).copy()
    L = len(c)
    if L < 2:
        return np.empty((0, 4))
    sq = (c * c).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None] - 2 * c @ c.T, 0) * (2 * n[:, None] * n[None] / (n[:, None] + n[None]))
    np.fill_diagonal(d2, np.inf)
    merges, chain = [], []
    alive, leaves = np.ones(L, bool), np.ones(L, np.int64)
    while len(merges) < L - 1:
        if not chain:
            chain.append(int(np.flatnonzero(alive)[0]))
        a = chain[-1]
        b = int(np.argmin(d2[a]))
        if len(chain) > 1 and d2[a, chain[-2]] <= d2[a, b]:
            b = chain[-2]  # ties go back down the chain, so that it always ends in a reciprocal pair
        if len(chain) > 1 and b == chain[-2]:
            chain.pop()
            chain.pop()
            keep, gone = min(a, b), max(a, b)
            h2, na, nb = d2[a, b], n[a], n[b]
            nk = n
            # Lance-Williams for Ward, on squared heights: d(k, a+b) from d(k, a), d(k, b), d(a, b)
            row = ((na + nk) * d2[a] + (nb + nk) * d2[b] - nk * h2) / (na + nb + nk)
            d2[keep], d2[:, keep] = row, row
            d2[gone], d2[:, gone] = np.inf, np.inf
            d2[keep, keep] = np.inf
            n[keep], alive[gone], leaves[keep] = na + nb, False, leaves[keep] + leaves[gone]
            merges.append((keep, gone, math.sqrt(max(h2, 0.0)), leaves[keep]))
        else:
            chain.append(b)
    return _as_linkage(merges, L)


def _as_linkage(merges: list, L: int) -> np.ndarray:
    """The chain's merges ``(leaf kept, leaf gone, height, leaves under)`` as scipy's linkage matrix: sorted by
    height, each merge's clusters named as scipy names them, through the leaves that represent them."""
    merges = sorted(merges, key=lambda m: m[2])
    cluster_of = np.arange(L)  # union-find over the leaf slots, and the cluster id of each root
    parent = np.arange(L)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    z = np.empty((L - 1, 4))
    for i, (a, b, h, size) in enumerate(merges):
        ra, rb = find(a), find(b)
        ca, cb = cluster_of[ra], cluster_of[rb]
        z[i] = (min(ca, cb), max(ca, cb), h, size)
        parent[rb] = ra
        cluster_of[ra] = L + i
    return z


def cut(z: np.ndarray, k: int, sizes: np.ndarray | None = None) -> np.ndarray:
    """The leaves' groups when the tree ``z`` (of ``L = len(z) + 1`` leaves) is cut into ``k`` groups (the first
    L - k merges applied): ``(L,)`` int64 group ids, numbered by the points they hold (``sizes (L,)`` per leaf,
    default 1), largest first (ties: lowest leaf first)."""
    L = len(z) + 1
    if not 1 <= k <= L:
        raise ValueError(f"a tree of {L} leaves cuts into 1 to {L} groups, not {k}")
    members = {i: [i] for i in range(L)}
    for i in range(L - k):
        a, b = int(z[i, 0]), int(z[i, 1])
        members[L + i] = members.pop(a) + members.pop(b)
    w = np.ones(L) if sizes is None else np.asarray(sizes, np.float64)
    groups = sorted(members.values(), key=lambda m: (-w[m].sum(), min(m)))
    labels = np.empty(L, np.int64)
    for g, m in enumerate(groups):
        labels[m] = g
    return labels

