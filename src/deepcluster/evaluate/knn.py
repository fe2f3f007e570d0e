"""Weighted k-nearest-neighbour classification on cosine similarity (the protocol of Wu et al. 2018, used by
DINO and most self-supervised work since): each of the k nearest training features votes for its label with
weight exp(similarity / T)."""
from __future__ import annotations

import numpy as np
import torch


def knn_predict(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, k: int = 20,
                temperature: float = 0.07, chunk: int = 1024) -> np.ndarray:
    """train ``(N, D)``, test ``(M, D)`` -> predicted labels ``(M,)``. Features are L2-normalised here."""
    tr = torch.nn.functional.normalize(torch.as_tensor(train, dtype=torch.float32), dim=1)
    te = torch.nn.functional.normalize(torch.as_tensor(test, dtype=torch.float32), dim=1)
    y = torch.as_tensor(train_labels, dtype=torch.long)
    n_classes = int(y.max()) + 1
    k = min(k, len(tr))
    preds = []
    for s in range(0, len(te), chunk):
        sim, idx = (te[s:s + chunk] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), n_classes)
        votes.scatter_add_(1, y[idx], (sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds).numpy()


def knn_accuracy(train, train_labels, test, test_labels, k: int = 20, temperature: float = 0.07) -> float:
    return float((knn_predict(train, train_labels, test, k, temperature) == np.asarray(test_labels)).mean())
