"""Transfer by fine-tuning (the paper's Table 2 columns): on a labelled target dataset, train a fresh classifier
head with either the fully connected layers only (``fc``, convs frozen with their BatchNorm statistics) or every
layer (``all``), then report top-1 on the target's test split. The given model is not modified."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import make_loader
from ..views import train_view
from .probe import classifier_accuracy, sgd_cosine

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
    opt, sched = sgd_cosine(params, lr, epochs * math.ceil(len(train_set) / batch_size))
    y_train = torch.as_tensor(train_set.targets, device=device)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    for _ in tqdm(range(epochs), desc=f"transfer ({mode})", unit="epoch", disable=None if progress else True,
                  leave=False):
        m.train()
        if mode == "fc":
            m.features.eval()  # frozen convs: BatchNorm keeps its statistics
        for images, idx in make_loader(train_set, rng.permutation(len(train_set)), batch_size, workers):
            x = train_view(images.to(device), image_size, train_set.mean, train_set.std, crop_scale, generator=gen)
            x = x.contiguous(memory_format=torch.channels_last)
            if mode == "fc":
                with torch.no_grad():
                    body = torch.flatten(m.conv_body(x), 1)
                logits = m.head(F.relu(m.classifier(body)))
            else:
                logits = m(x)
            loss = F.cross_entropy(logits, y_train[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return classifier_accuracy(m, test_set, image_size, device, batch_size, workers)
