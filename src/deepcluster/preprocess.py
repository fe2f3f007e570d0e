"""Feature pre-processing before clustering: PCA-whitening to a few hundred dimensions, then L2 normalisation."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

CHUNK = 8192  # rows centred at a time


def check_rows(x, who: str, fitted=None) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(N, d)`` array for ``who`` (an estimator's name in the messages), or one
    clear ValueError; ``fitted``: the estimator it goes through, which must be fitted on rows of the same width."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{who} takes a 2-D array of rows (N, d); got shape {x.shape}: reshape it, e.g. "
                         f"x.reshape(len(x), -1)")
    if fitted is not None:
        check_is_fitted(fitted)
        if x.shape[1] != fitted.n_features_in_:
            raise ValueError(f"{who} was fitted on rows of {fitted.n_features_in_} values; these have "
                             f"{x.shape[1]}: give it features from the same pipeline")
    return x


class PCAWhitening(TransformerMixin, BaseEstimator):
    """PCA to ``n_components`` dims with whitening (every kept component scaled to unit variance), as faiss's
    ``PCAMatrix(d, n, eigen_power=-0.5)`` in the paper. ``eps`` is added to the eigenvalues so that directions of
    (near) zero variance are not blown up into noise. ``whiten=False`` keeps each component's variance: a plain
    PCA projection. A scikit-learn transformer (``clone``, ``Pipeline``)."""

    def __init__(self, n_components: int = 256, eps: float = 1e-5, whiten: bool = True):
        self.n_components, self.eps, self.whiten = n_components, eps, whiten

    def fit(self, x: np.ndarray, y=None) -> "PCAWhitening":
        """x: ``(N, D)``. Learns ``mean_ (D,)``, ``components_ (n, D)``, ``explained_variance_ (n,)`` and
        ``projection_ (D, n)``, the matrix that maps centred rows to their (whitened) components; ``y`` is
        ignored."""
        x = check_rows(x, "PCA-whitening")
        n = min(self.n_components, x.shape[1], max(1, x.shape[0] - 1))
        self.mean_ = x.mean(0, dtype=np.float64)
        mean32 = self.mean_.astype(np.float32)
        if len(x) < x.shape[1]:
            vals, vecs = _gram_eigh(x - mean32)
        else:
            cov = np.zeros((x.shape[1], x.shape[1]))
            for s in range(0, len(x), CHUNK):  # chunks: never a centred copy of the whole (N, D) matrix
                xc = x[s:s + CHUNK] - mean32
                cov += xc.T @ xc
            vals, vecs = np.linalg.eigh(cov / max(1, len(x) - 1))  # ascending
        order = np.argsort(vals)[::-1][:n]
        self.explained_variance_ = np.clip(vals[order], 0.0, None)
        self.components_ = vecs[:, order].T
        # Each eigenvector's sign is arbitrary: fix it so the same data always gives the same projection.
        signs = np.sign(self.components_[np.arange(n), np.abs(self.components_).argmax(1)])
        self.components_ *= signs[:, None]
        scale = self.eps * max(float(self.explained_variance_.max(initial=0.0)), 1e-12)
        gain = 1 / np.sqrt(self.explained_variance_ + scale) if self.whiten else np.ones(n)
        self.projection_ = (self.components_ * gain[:, None]).T.astype(np.float32)
        self._mean32 = self.mean_.astype(np.float32)
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` -> ``(N, n_components)`` float32 with (about) identity covariance on the fitted data."""
        return centred_projection(check_rows(x, "PCA-whitening", self), self._mean32, self.projection_)

    def fit_transform(self, x: np.ndarray, y=None) -> np.ndarray:
        return self.fit(x).transform(x)


def centred_projection(x: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``(x - mean) @ projection`` for float32 rows ``(N, D)``, ``mean (D,)`` and ``projection (D, d)``, a chunk of
    rows at a time: the only ``(N, .)`` array made is the result."""
    out = np.empty((len(x), projection.shape[1]), dtype=np.float32)
    for s in range(0, len(x), CHUNK):
        out[s:s + CHUNK] = (x[s:s + CHUNK] - mean) @ projection
    return out


def whiten(x, mean, projection):
    """The clustering space of DeepCluster v1, its arithmetic written once: rows ``(N, D)`` minus ``mean``, times
    ``projection`` (a fitted :class:`PCAWhitening`'s ``mean_`` and ``projection_``), L2-normalised. Rows in memory
    as float32 numpy arrays, or torch tensors on a device (as extraction applies it on the fly) with ``mean`` and
    ``projection`` tensors there: the same formula, each in its own library's kernels."""
    if isinstance(x, torch.Tensor):
        return F.normalize((x - mean) @ projection, dim=1)
    return l2_normalize(centred_projection(x, mean, projection))


def _gram_eigh(xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(N,)`` and unit eigenvectors ``(D, N)`` of the covariance of the centred rows ``xc (N, D)``
    with N < D, from the ``N x N`` Gram matrix: ``Xc Xc^T u = l u`` gives ``Xc^T u``, an eigenvector of
    ``Xc^T Xc`` with the same eigenvalue. O(N^2 D) instead of the O(D^3) of the ``D x D`` covariance (800
    AlexNet features: 0.2 s instead of 10 s)."""
    xc = xc.astype(np.float64)
    vals, u = np.linalg.eigh(xc @ xc.T)
    vecs = xc.T @ u
    vecs /= np.maximum(np.linalg.norm(vecs, axis=0), 1e-12)
    return vals / max(1, len(xc) - 1), vecs


def span_coordinates(x: np.ndarray) -> np.ndarray:
    """Rows ``(N, D)`` with N < D -> ``(N, r)``, r <= N: the coordinates of the centred rows in an orthonormal basis
    of the space they span, from the ``N x N`` Gram matrix. Every distance between two rows, or between a row and
    a mean of rows, is kept (to float rounding), so k-means, which reads nothing else, finds the same clusters on N
    columns instead of D (800 AlexNet features: 3x faster). Rows with N >= D come back as they are."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) >= x.shape[1]:
        return x
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    vals, u = np.linalg.eigh(xc @ xc.T)
    keep = vals > max(float(vals.max(initial=0.0)), 1e-300) * 1e-12  # directions the rows actually span
    return (u[:, keep] * np.sqrt(vals[keep])).astype(np.float32)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale each row of ``(N, D)`` to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def preprocess_features(x: np.ndarray, pca_dim: int = 256) -> np.ndarray:
    """The paper's pre-processing: PCA-whiten ``(N, D)`` to ``min(pca_dim, D)`` dims, then L2-normalise rows."""
    return l2_normalize(PCAWhitening(pca_dim).fit_transform(x))
