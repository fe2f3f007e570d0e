"""Transfer by fine-tuning (the paper's Table 2 columns): on a labelled target dataset, train a fresh classifier
head with either the fully connected layers only (``fc``, convs frozen with their BatchNorm statistics) or every
layer (``all``), then report top-1 on the target's test split. The given model is not modified."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .fit import classifier_accuracy, fit_on_views

MODES = ("fc", "all")


def finetune(model, train_set, test_set, image_size: int, device, mode: str = "fc", epochs: int = 10,
             lr: float = 0.01, batch_size: int = 256, crop_scale: float = 0.08, seed: int = 0,
             workers: int | None = 0, progress: bool = True) -> float:
    """Fine-tune a copy of ``model`` on ``train_set``'s labels; return its top-1 accuracy on ``test_set``."""
    assert mode in MODES
    device = torch.device(device)
    torch.manual_seed(seed)
    m = copy.deepcopy(model).to(device)
    n_classes = int(max(train_set.targets.max(), test_set.targets.max())) + 1
    m.reset_head(n_classes)
    params = (list(m.classifier.parameters()) + list(m.head.parameters())) if mode == "fc" else list(m.parameters())

    def modes():
        m.train()
        if mode == "fc":
            m.features.eval()  # frozen convs: BatchNorm keeps its statistics

    def loss(x, y):
        if mode == "fc":
            with torch.no_grad():
                body = torch.flatten(m.conv_body(x), 1)
            return F.cross_entropy(m.head(F.relu(m.classifier(body))), y)
        return F.cross_entropy(m(x), y)

    fit_on_views(loss, params, train_set, image_size, device, epochs, lr, batch_size, crop_scale, seed, workers,
                 progress, f"transfer ({mode})", modes)
    return classifier_accuracy(m, test_set, image_size, device, batch_size, workers)
