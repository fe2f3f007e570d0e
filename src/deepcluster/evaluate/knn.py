"""Weighted k-nearest-neighbour classification on cosine similarity (the protocol of Wu et al. 2018, used by
DINO and most self-supervised work since): each of the k nearest training features votes for its label with
weight exp(similarity / T)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def knn_predict(train: np.ndarray, train_labels: np.ndarray, test: Optional[np.ndarray] = None, k: int = 20,
                temperature: float = 0.07, chunk: int = 1024) -> np.ndarray:
    """train ``(N, D)``, test ``(M, D)`` -> predicted labels ``(M,)``. Features are L2-normalised here. Without
    ``test``, every training image is classified by the others (leave-one-out)."""
    leave_one_out = test is None
    test = train if leave_one_out else test
    tr = torch.nn.functional.normalize(torch.as_tensor(train, dtype=torch.float32), dim=1)
    te = torch.nn.functional.normalize(torch.as_tensor(test, dtype=torch.float32), dim=1)
    y = torch.as_tensor(train_labels, dtype=torch.long)
    n_classes = int(y.max()) + 1
    k = min(k, len(tr))
    preds = []
    for s in range(0, len(te), chunk):
        sim = te[s:s + chunk] @ tr.T
        if leave_one_out:  # an image is not its own neighbour
            rows = torch.arange(len(sim))
            sim[rows, rows + s] = -float("inf")
        sim, idx = sim.topk(min(k, len(tr) - leave_one_out), dim=1)
        votes = torch.zeros(len(sim), n_classes)
        votes.scatter_add_(1, y[idx], (sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds).numpy()


def knn_accuracy(train, train_labels, test=None, test_labels=None, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy of :func:`knn_predict`; without ``test``, leave-one-out on the training images."""
    truth = train_labels if test is None else test_labels
    return float((knn_predict(train, train_labels, test, k, temperature) == np.asarray(truth)).mean())
