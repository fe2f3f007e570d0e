"""k-means as a scikit-learn-shaped estimator over faiss (CPU, or GPU when present) or PyTorch (CUDA GPU when faiss
has no GPU support, as with the PyPI wheel ``faiss-cpu``)."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from ..preprocess import check_rows
from .health import Health
from .index import check_device, faiss_module, flat_index, gpu_available
from .repair import repair_empty_clusters, split_empty

INITS = {"random": "ClusteringInitMethod_RANDOM", "k-means++": "ClusteringInitMethod_KMEANS_PLUS_PLUS"}
BACKENDS = ("auto", "faiss", "torch")
_CHUNK_ELEMS = 1 << 24  # distances held at once by _assign: rows x k float32 = 64 MiB, whatever N is


def _resolve_backend(backend: str, device: str) -> tuple[str, str]:
    """``(backend, device)`` that a ``KMeans(backend=..., device=...)`` runs on: ("faiss", "cpu" | "cuda") or
    ("torch", "cpu" | "cuda:<i>"). A GPU is wanted with device "auto" or "cuda"; faiss's own GPU code comes
    first, then torch on the current CUDA device; with no GPU, faiss CPU unless the torch backend is forced."""
    want_gpu, need_gpu = device != "cpu", device == "cuda"
    if want_gpu and backend != "torch" and gpu_available():
        return "faiss", "cuda"
    if want_gpu and backend != "faiss":
        import torch

        if torch.cuda.is_available():
            return "torch", f"cuda:{torch.cuda.current_device()}"
    if need_gpu and backend == "faiss":
        raise ValueError("device='cuda' with backend='faiss' but this faiss has no GPU support (faiss-cpu?); "
                         "use backend='auto' or 'torch' to run k-means on the GPU through PyTorch")
    if need_gpu:
        raise ValueError("device='cuda' but no CUDA GPU is visible (neither faiss nor torch sees one); "
                         "pass device='auto' or 'cpu' to run on the CPU")
    return ("torch" if backend == "torch" else "faiss"), "cpu"


def _assign(x, centroids, chunk: int | None = None, x_sq=None):
    """Nearest centroid of every row by squared L2 distance, computed as ||x||^2 - 2 x.c + ||c||^2 with one
    matmul per block of ``chunk`` rows, so that memory stays O(chunk x k) (never N x k).

    x: ``(N, d)`` and centroids: ``(k, d)`` float32 tensors on one device; ``chunk`` defaults to about 2**24 / k
    rows; ``x_sq``: ``(N,)`` squared norms of x, when the caller already has them.
    Returns ``(labels (N,) int64, d2 (N,) float32)``: index of the nearest centroid (the lowest index on ties)
    and the squared distance to it.
    """
    import torch

    n, k = len(x), len(centroids)
    chunk = chunk or max(1, _CHUNK_ELEMS // k)
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    c_sq = (centroids * centroids).sum(1)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    d2 = torch.empty(n, dtype=x.dtype, device=x.device)
    for i in range(0, n, chunk):
        # ||x||^2 is the same for all centroids of a row: the argmin needs ||c||^2 - 2 x.c only
        part = torch.addmm(c_sq, x[i:i + chunk], centroids.T, alpha=-2)
        d2[i:i + chunk], labels[i:i + chunk] = part.min(1)
    # rounding in the expansion can leave tiny negatives for points sitting on their centroid
    return labels, (d2 + x_sq).clamp_min_(0)


def _kmeans_pp(x, k: int, rng: np.random.Generator, x_sq):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly at random, each next one with
    probability proportional to its squared distance to the nearest centre so far. The draws come from ``rng``
    (numpy) so that a seed gives the same centres on CPU and GPU up to rounding.

    x: ``(N, d)`` tensor, x_sq: ``(N,)`` its squared norms. Returns ``(k, d)``. Costs k passes over x.
    """
    import torch

    n = len(x)
    chosen = [int(rng.integers(n))]
    d2 = (x_sq - 2 * (x @ x[chosen[0]]) + x_sq[chosen[0]]).clamp_min_(0)
    for _ in range(1, k):
        cum = torch.cumsum(d2.double(), 0)  # float64: a float32 running sum over millions of points drifts
        total = float(cum[-1])
        if total <= 0:  # every point sits on a centre (duplicates): no weight left, draw uniformly
            j = int(rng.integers(n))
        else:  # side="right" never lands on a zero-weight point, even for a draw of exactly 0
            u = torch.tensor([rng.random() * total], dtype=torch.float64, device=x.device)
            j = min(int(torch.searchsorted(cum, u, side="right")), n - 1)
        chosen.append(j)
        d2 = torch.minimum(d2, (x_sq - 2 * (x @ x[j]) + x_sq[j]).clamp_min_(0))
    return x[chosen].clone()


def _lloyd_torch(x, centroids, n_iter: int, rng: np.random.Generator, x_sq=None):
    """At most ``n_iter`` Lloyd iterations, as faiss.Clustering runs them: assign, record the objective, move
    each centroid to the mean of its points, split empty clusters (:func:`split_empty`). Like faiss, which stops
    once the objective repeats, it stops at a fixed point: an assignment equal to the previous one, no split since.

    x: ``(N, d)`` float32 tensor, centroids: ``(k, d)`` on the same device (not modified); x_sq: ``(N,)``.
    Returns ``(centroids (k, d), objective, n_split)``: objective[i] is the sum of squared distances of the
    assignment made at iteration i (before that iteration's update), n_split the empty clusters split in all.
    """
    import torch

    k = len(centroids)
    objective, n_split, previous = [], 0, None
    for _ in range(n_iter):
        labels, d2 = _assign(x, centroids, x_sq=x_sq)
        objective.append(float(d2.sum(dtype=torch.float64)))
        if previous is not None and torch.equal(labels, previous):
            break  # the centroids are already the means of this assignment: more iterations change nothing
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        # an empty cluster keeps its old centroid for now; split_empty replaces it below
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].to(x.dtype), centroids)
        counts = counts.cpu().numpy().astype(np.float64)
        if (counts == 0).any():  # rare after the first iterations: a round trip of k x d floats is cheap then
            c = centroids.cpu().numpy()
            n_split += split_empty(c, counts, rng)
            centroids = torch.from_numpy(c).to(x.device)
            labels = None  # split centroids are not the means of this assignment: no fixed point yet
        previous = labels
    return centroids, objective, n_split


# Row blocks of the whole-array checks below: the clustering stage holds x and little more, never an (N, d)
# temporary (a mask of x alone would be a quarter of x's size).
BLOCK = 8192


def all_finite(x: np.ndarray) -> bool:
    return all(np.isfinite(x[s:s + BLOCK]).all() for s in range(0, len(x), BLOCK))


def inertia(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, chunk: int = BLOCK) -> float:
    """Sum of squared distances of the rows of ``x (N, d)`` to their centroids ``centroids[labels]``, in blocks
    of rows."""
    return float(sum(((x[s:s + chunk] - centroids[labels[s:s + chunk]]) ** 2).sum(dtype=np.float64)
                     for s in range(0, len(x), chunk)))


class KMeans(ClusterMixin, BaseEstimator):
    """Lloyd's k-means: up to ``n_iter`` iterations from ``seed`` (fewer once converged), no subsampling, empty
    clusters re-split by splitting a non-empty one (during the iterations, the faiss way;
    :func:`repair_empty_clusters` after the final assignment).

    ``init``: "random" (k points drawn at random, the paper's choice) or "k-means++"; ``n_init``: restarts, the
    one with the lowest objective is kept.

    ``backend``: "faiss", "torch" or "auto". "auto" runs faiss on the GPU when faiss has GPU support and a GPU is
    wanted, else the PyTorch implementation on the current CUDA device when torch
    sees one and a GPU is wanted, else faiss on the CPU. "torch" forces the PyTorch implementation (on CUDA when
    available and wanted, else on the CPU). A GPU is wanted with ``device`` "auto" or "cuda"; "cuda" with no
    usable GPU raises ValueError.
    The torch backend does what faiss.Clustering does with these settings (random init: k distinct points drawn
    with ``np.random.default_rng(seed)``; k-means++ implemented in torch), but its draws differ from faiss's, so
    the two reach the same partition only where the data leave little choice. Its ``objective_`` covers the
    kept restart only (faiss's also holds the restarts before it).

    Learned attributes: ``labels_ (N,)``, ``cluster_centers_ (k, d)``, ``inertia_`` (sum of squared distances to
    the assigned centroid), ``n_iter_``, ``n_resplit_`` (empty clusters re-split in all), ``objective_`` (per
    iteration), ``health_`` (:class:`~deepcluster.clustering.health.Health`: objective per point, clusters
    re-split),
    ``backend_`` (what ran: "faiss:cpu", "faiss:cuda", "torch:cpu" or "torch:cuda:<i>"), ``n_features_in_``.
    A scikit-learn estimator: ``clone``, ``get_params`` and ``Pipeline`` take it.
    """

    def __init__(self, n_clusters: int, n_iter: int = 20, seed: int = 0, init: str = "random", n_init: int = 1,
                 device: str = "auto", verbose: bool = False, backend: str = "auto"):
        self.n_clusters, self.n_iter, self.seed, self.init, self.n_init = n_clusters, n_iter, seed, init, n_init
        self.device, self.verbose, self.backend = device, verbose, backend

    def fit(self, x: np.ndarray, y=None) -> "KMeans":
        """Cluster the rows of ``x (N, d)``; ``y`` is ignored."""
        if self.init not in INITS:
            raise ValueError(f"unknown k-means init '{self.init}': choose one of {', '.join(INITS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown k-means backend '{self.backend}': choose one of {', '.join(BACKENDS)}")
        check_device(self.device)
        x = check_rows(x, "k-means")
        n, d = x.shape
        if self.n_clusters < 2 or self.n_clusters > n:
            raise ValueError(f"k-means needs 2 <= k <= N; got k = {self.n_clusters} for N = {n} points")
        if not all_finite(x):
            raise ValueError("k-means input holds NaN or infinite values")
        backend, device = _resolve_backend(self.backend, self.device)
        fit = self._fit_torch if backend == "torch" else self._fit_faiss
        centroids, labels, d2, objective, n_split = fit(x, device)
        self.backend_ = f"{backend}:{device}"
        self.objective_ = np.asarray(objective, dtype=np.float64)
        self.n_iter_ = len(objective)
        labels, centroids, n_after = repair_empty_clusters(x, labels, centroids, np.random.default_rng(self.seed))
        self.labels_, self.cluster_centers_ = labels, centroids
        self.n_resplit_ = n_split + n_after
        # the final assignment's distances are the objective, unless the repair moved points
        self.inertia_ = inertia(x, centroids, labels) if n_after else float(d2.sum(dtype=np.float64))
        self.health_ = Health.of(labels, self.n_resplit_, self.inertia_ / n)
        self.n_features_in_ = d
        return self

    def _fit_faiss(self, x: np.ndarray, device: str):
        """faiss.Clustering on ``x (N, d)``. Returns ``(centroids (k, d), labels (N,) int64, squared distances to
        them (N,), objective, n_split)``."""
        faiss = faiss_module()
        d = x.shape[1]
        clus = faiss.Clustering(d, self.n_clusters)
        clus.niter, clus.seed, clus.verbose = self.n_iter, int(self.seed) % (2 ** 31), self.verbose
        clus.nredo = self.n_init
        clus.init_method = getattr(faiss, INITS[self.init])
        clus.max_points_per_centroid = 10_000_000  # the paper: cluster every point, no subsampling
        clus.min_points_per_centroid = 1  # small k/N ratios are intended here; no warning
        index = flat_index(d, device != "cpu")
        clus.train(x, index)
        centroids = faiss.vector_to_array(clus.centroids).reshape(self.n_clusters, d)
        stats = clus.iteration_stats
        stats = [stats.at(i) for i in range(stats.size())]
        d2, idx = index.search(x, 1)
        return (centroids, idx[:, 0].astype(np.int64), d2[:, 0], [s.obj for s in stats],
                int(sum(s.nsplit for s in stats)))

    def _fit_torch(self, x: np.ndarray, device: str):
        """:func:`_lloyd_torch` from ``n_init`` starts on ``device``; x goes there once and stays float32.
        Returns ``(centroids (k, d) float32, labels (N,) int64, squared distances (N,), objective, n_split)`` of
        the best start."""
        import torch

        n, k = len(x), self.n_clusters
        rng = np.random.default_rng(self.seed)
        xt = torch.from_numpy(x).to(device)
        x_sq = (xt * xt).sum(1)
        best = None
        for restart in range(self.n_init):
            if self.init == "k-means++":
                init = _kmeans_pp(xt, k, rng, x_sq)
            else:
                init = xt[torch.from_numpy(rng.choice(n, k, replace=False)).to(device)]
            run = _lloyd_torch(xt, init, self.n_iter, rng, x_sq)
            if self.verbose:
                print(f"k-means (torch, {device}) start {restart}: objective {run[1]}, {run[2]} splits")
            # as faiss: keep the start whose last objective is lowest
            if best is None or (run[1] and run[1][-1] < best[1][-1]):
                best = run
        centroids, objective, n_split = best
        labels, d2 = _assign(xt, centroids, x_sq=x_sq)
        return centroids.cpu().numpy(), labels.cpu().numpy(), d2.cpu().numpy(), objective, n_split

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest learned centroid for each row of ``(N, d)``, ``d`` the width it was fitted on."""
        x = check_rows(x, "k-means", self)
        index = flat_index(self.cluster_centers_.shape[1], False)
        index.add(np.ascontiguousarray(self.cluster_centers_, dtype=np.float32))
        return index.search(x, 1)[1][:, 0].astype(np.int64)


def k_means(x: np.ndarray, n_clusters: int, **kwargs):
    """Function twin of :class:`KMeans`: returns ``(cluster_centers, labels, inertia)``."""
    km = KMeans(n_clusters, **kwargs).fit(x)
    return km.cluster_centers_, km.labels_, km.inertia_
