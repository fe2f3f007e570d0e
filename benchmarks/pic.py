"""Power Iteration Clustering: our vectorised implementation next to a direct Python-loop implementation of the
same steps, on the same k-NN graph, in one run.

Features are synthetic and shaped like DeepCluster's pre-processed ones: N points of a mixture of Gaussian blobs
in 256 dims, L2-normalised. The faiss k-NN search is shared (timed once); the steps after it (weights and
symmetrisation, power iterations, pointers, following them, moving singletons) are timed for both, and the two
results are checked to be identical.

    .venv/bin/python benchmarks/pic.py [--n 100000] [--dim 256] [--blobs 1000]

``--graph``: the exact k-NN graph against the approximate one (faiss IVF, what ``--pic-graph auto`` takes above
100,000 points on a CPU), side by side: the time of each, the approximate graph's recall (on 1,000 points searched
exactly) and the NMI between the PIC clusters of the two graphs. ``--no-exact`` skips the exact graph (an hour at
1M points on 2 cores): recall is still measured.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from deepcluster.clustering.pic import (
    PIC,
    RECALL_TARGET,
    affinity_matrix,
    follow_pointers,
    graph_recall,
    ivf_graph,
    knn_graph,
    move_singletons,
    power_iterations,
)


def pic_python_loops(d2: np.ndarray, idx: np.ndarray, sigma: float, alpha: float, n_iter: int,
                     singletons: bool = True) -> np.ndarray:
    """The same steps as :class:`deepcluster.clustering.PIC`, written as plain loops over nodes and edges (the
    way the reference implementation does them). Ties go to the lowest neighbour index, as in ours."""
    n, k = idx.shape
    adj: list[dict[int, float]] = [dict() for _ in range(n)]
    for i in range(n):
        for t in range(k):
            j, wij = int(idx[i, t]), math.exp(-float(d2[i, t]) / sigma ** 2)
            adj[i][j] = adj[i].get(j, 0.0) + wij
            adj[j][i] = adj[j].get(i, 0.0) + wij
    adj = [dict(sorted(a.items())) for a in adj]
    v = [1.0 / n] * n
    for _ in range(n_iter):
        nxt = [alpha * sum(wij * v[j] for j, wij in a.items()) + (1.0 - alpha) / n for a in adj]
        s = sum(nxt)
        v = [x / s for x in nxt]
    pointer = list(range(n))
    for i in range(n):
        best = 0.0
        for j, wij in adj[i].items():
            gain = wij * (v[j] - v[i])
            if gain > best:
                best, pointer[i] = gain, j
    root = []
    for i in range(n):
        while pointer[i] != i:
            i = pointer[i]
        root.append(i)
    labels = root
    while singletons:
        size: dict[int, int] = {}
        for c in labels:
            size[c] = size.get(c, 0) + 1
        moves = {}
        for i in range(n):
            if size[labels[i]] != 1:
                continue
            best, to = -1.0, None
            for j, wij in adj[i].items():
                if size[labels[j]] > 1 and wij > best:
                    best, to = wij, j
            if to is not None:
                moves[i] = labels[to]
        if not moves:
            break
        labels = [moves.get(i, c) for i, c in enumerate(labels)]
    _, out = np.unique(np.array(labels), return_inverse=True)
    return out


def blobs(n: int, dim: int, n_blobs: int, seed: int = 0, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_blobs, dim)).astype(np.float32)
    x = centres[rng.integers(0, n_blobs, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def compare_graphs(args) -> None:
    """The exact graph and the approximate one, and PIC on each (see the module's text)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    x = blobs(args.n, args.dim, args.blobs, noise=args.noise)
    print(f"N = {args.n:,} points, {args.dim}-d, {args.blobs} blobs (noise {args.noise}), 5 neighbours")
    print("| graph | search | recall (1,000 points) | PIC: clusters | PIC: whole fit | NMI with the exact graph's |")
    print("|---|---:|---:|---:|---:|---:|")
    exact = None
    for graph in (() if args.no_exact else ("exact",)) + ("ivf",):
        t = time.perf_counter()
        found = ivf_graph(x, 5) if graph == "ivf" else knn_graph(x, 5)
        search = time.perf_counter() - t
        if found is None:
            print(f"| ivf | {search:.1f} s | below {RECALL_TARGET} in up to an eighth of the lists: PIC searches the "
                  f"exact graph instead | | | |")
            continue
        recall = graph_recall(x, found[1])
        t = time.perf_counter()
        pic = PIC(graph=graph, device="cpu").fit(x)
        whole = time.perf_counter() - t
        exact = pic.labels_ if graph == "exact" else exact
        agree = f"{nmi(exact, pic.labels_):.4f}" if exact is not None else "(not run)"
        name = "exact" if graph == "exact" else f"ivf, {found[3]} of {int(4 * np.sqrt(args.n))} lists"
        print(f"| {name} | {search:.1f} s | {recall:.4f} | {pic.n_clusters_:,} | {whole:.1f} s | {agree} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--blobs", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.35, help="standard deviation around each blob's centre")
    ap.add_argument("--graph", action="store_true", help="exact against approximate k-NN graph (see above)")
    ap.add_argument("--no-exact", action="store_true", help="with --graph: skip the exact graph")
    args = ap.parse_args()
    if args.graph:
        return compare_graphs(args)
    pic = PIC()
    x = blobs(args.n, args.dim, args.blobs)
    print(f"PIC on N = {args.n:,} points, {args.dim}-d, {pic.n_neighbors} neighbours, sigma {pic.sigma}, "
          f"alpha {pic.alpha}, {pic.n_iter} iterations")

    t0 = time.perf_counter()
    d2, idx = knn_graph(x, pic.n_neighbors)
    t_knn = time.perf_counter() - t0

    t0 = time.perf_counter()
    w = affinity_matrix(d2, idx, pic.sigma)
    v = power_iterations(w, pic.alpha, pic.n_iter)
    _, ours = np.unique(follow_pointers(w, v), return_inverse=True)
    ours, _ = move_singletons(w, ours)
    _, ours = np.unique(ours, return_inverse=True)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    loops = pic_python_loops(d2, idx, pic.sigma, pic.alpha, pic.n_iter)
    t_loops = time.perf_counter() - t0

    t0 = time.perf_counter()
    whole = PIC().fit(x)
    t_whole = time.perf_counter() - t0
    same = np.array_equal(ours, loops) and np.array_equal(ours, whole.labels_)

    print("| step | time |\n|---|---|")
    print(f"| k-NN graph (faiss, shared) | {t_knn:.2f} s |")
    print(f"| the other steps, vectorised (ours) | {t_ours:.2f} s |")
    print(f"| the other steps, Python loops | {t_loops:.2f} s |")
    print(f"| PIC().fit, everything | {t_whole:.2f} s |")
    print(f"speed-up of the steps after the graph: {t_loops / t_ours:.0f}x; whole PIC incl. graph: "
          f"{(t_knn + t_loops) / t_whole:.1f}x")
    print(f"clusters found: {whole.n_clusters_} (blobs: {args.blobs}), singletons moved "
          f"{whole.n_singletons_moved_}; identical labels from both implementations: {same}")
    if not same:
        raise SystemExit("the two implementations disagree")


if __name__ == "__main__":
    main()
