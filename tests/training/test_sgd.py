"""Our SGD against torch.optim.SGD: the same steps, and checkpoints each can read from the other."""
from __future__ import annotations

import copy

import pytest
import torch

from deepcluster.training.sgd import SGD


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _steps(net, opt, n, seed, lr_change=True):
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        if lr_change and i == n // 2:
            for group in opt.param_groups:
                group["lr"] *= 0.5
        opt.step()


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 1e-2), (0.0, 1e-2), (0.9, 0.0)])
def test_sgd_takes_torch_optim_sgd_steps(momentum, weight_decay):
    ours, theirs = _net(), _net()
    _steps(ours, SGD(ours.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay), 6, 1)
    _steps(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay), 6, 1)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(ours[0].weight, _net()[0].weight)  # it did train


def test_sgd_skips_parameters_without_gradients():
    net = _net()
    frozen = net[0].weight.detach().clone()
    net[0].weight.requires_grad_(False)
    _steps(net, SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9), 2, 0)
    assert torch.equal(net[0].weight, frozen)


@pytest.mark.parametrize("first,second", [(SGD, torch.optim.SGD), (torch.optim.SGD, SGD)])
def test_sgd_resumes_from_either_optimisers_state(first, second):
    """Three steps, a state_dict, three more from it by the other class: the same weights as six steps without
    a break, so runs checkpointed before or after this optimiser resume exactly."""
    part = _net()
    opt = first(part.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    _steps(part, opt, 3, 1, False)
    saved = copy.deepcopy(opt.state_dict())
    again = second(part.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    again.load_state_dict(saved)
    assert again.param_groups[0]["lr"] == 0.1
    _steps(part, again, 3, 2, False)
    ref = _net()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    _steps(ref, ref_opt, 3, 1, False)
    _steps(ref, ref_opt, 3, 2, False)
    for a, b in zip(part.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_sgd_refuses_a_state_of_another_network():
    opt = SGD(_net().parameters(), lr=0.1, momentum=0.9)
    other = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="different number of parameters"):
        opt.load_state_dict(other.state_dict())
