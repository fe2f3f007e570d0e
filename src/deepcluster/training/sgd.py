"""Stochastic gradient descent with momentum and L2 weight decay: ``torch.optim.SGD``'s update and its
``state_dict`` layout, without ``torch.optim``. Making any ``torch.optim`` optimiser imports ``torch._dynamo``
(1.2 s on a 2-core CPU, more than a training step of a small run); this class reads the same checkpoints and
writes ones ``torch.optim.SGD`` reads."""
from __future__ import annotations

from typing import Iterable

import torch


class SGD:
    """``p <- p - lr * b`` with ``b <- momentum * b + (grad + weight_decay * p)`` (``b`` starts at the first
    step's gradient; no dampening, no Nesterov), as ``torch.optim.SGD(params, lr, momentum, weight_decay=...)``.
    ``param_groups[i]["lr"]`` may be changed between steps, as with ``torch.optim``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("SGD got an empty parameter list")
        self.param_groups = [{"params": params, "lr": lr, "momentum": momentum, "dampening": 0,
                              "weight_decay": weight_decay, "nesterov": False, "maximize": False, "foreach": None,
                              "differentiable": False, "fused": None}]
        self.state: dict[torch.Tensor, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["momentum"]:
                bufs = []
                for p, g in zip(params, grads):
                    buf = self.state.setdefault(p, {}).get("momentum_buffer")
                    if buf is None:  # the first step: the buffer is the gradient itself
                        buf = self.state[p]["momentum_buffer"] = g.detach().clone()
                    else:
                        buf.mul_(group["momentum"]).add_(g)
                    bufs.append(buf)
                grads = bufs
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict:
        """``torch.optim.SGD``'s layout: parameters by their position, over all groups in order."""
        ids, groups = {}, []
        for group in self.param_groups:
            for p in group["params"]:
                ids.setdefault(p, len(ids))
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": [ids[p] for p in group["params"]]})
        return {"state": {ids[p]: dict(s) for p, s in self.state.items() if p in ids}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """A state written by :meth:`state_dict` or by ``torch.optim.SGD`` over the same parameters in the same
        order; the saved learning rate and momentum settings replace the current ones."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(len(s["params"]) != len(g["params"])
                                                       for s, g in zip(saved, self.param_groups)):
            raise ValueError("the saved optimiser state has a different number of parameters than the network")
        by_id = {}
        for s, group in zip(saved, self.param_groups):
            by_id.update(zip(s["params"], group["params"]))
            group.update({k: v for k, v in s.items() if k in group and k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = by_id[int(i)]
            self.state[p] = {k: v.to(p.device, p.dtype) if torch.is_tensor(v) else v for k, v in s.items()}
