import pytest
import torch
import torch.nn.functional as F

from deepcluster.models import Sobel, build_model


def test_sobel_is_fixed_and_computes_edges():
    s = Sobel(3)
    assert list(s.parameters()) == []  # buffers only: no optimiser can train it
    x = torch.zeros(1, 3, 8, 8)
    x[..., 4:] = 1.0  # a vertical edge
    out = s(x)
    assert out.shape == (1, 2, 8, 8)
    assert out[0, 0, 4, 3].abs() == 4 and out[0, 0, 4, 1] == 0  # horizontal gradient fires at the edge only
    assert out[0, 1, 2:6, 2:6].abs().max() == 0  # no vertical gradient inside the image
    # gray is the channel mean
    assert torch.allclose(F.conv2d(x, s.gray), x.mean(1, keepdim=True))


@pytest.mark.parametrize("arch,size,dim", [("small", 28, 512), ("small", 64, 512), ("alexnet", 224, 4096)])
def test_feature_and_head_shapes(arch, size, dim):
    m = build_model(arch, 3, size, sobel=True).eval()
    assert m.feature_dim == dim
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert m.embed(x).shape == (2, dim)
        m.reset_head(7)
        assert m(x).shape == (2, 7)


def test_alexnet_flattens_to_9216_like_the_paper():
    m = build_model("alexnet", 3, 224)
    assert m.classifier[1].in_features == 9216


def test_vgg16_has_13_bn_convs():
    m = build_model("vgg16", 3, 32, sobel=False)
    convs = [layer for layer in m.features if isinstance(layer, torch.nn.Conv2d)]
    assert len(convs) == 13 and m.classifier[1].in_features == 512


def test_reset_head_gives_a_fresh_small_head():
    m = build_model("small", 1, 28)
    old = m.reset_head(10)
    new = m.reset_head(10)
    assert new is not old and m.head is new
    assert new.weight.std().item() == pytest.approx(0.01, rel=0.2) and new.bias.abs().max() == 0
    body = {id(p) for p in m.body_parameters()}
    assert id(new.weight) not in body and len(body) == len(list(m.parameters())) - 2


def test_embed_is_before_the_last_relu():
    m = build_model("small", 1, 28).eval()
    with torch.no_grad():
        f = m.embed(torch.randn(16, 1, 28, 28))
    assert (f < 0).any()


@pytest.mark.parametrize("arch,size", [("small", 32), ("alexnet", 224)])
def test_folding_batchnorm_keeps_the_outputs(arch, size):
    torch.manual_seed(0)
    m = build_model(arch, 3, size, sobel=True)
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):  # statistics away from 0 / 1
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    m.eval()
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        plain, folded = m.embed(x), m.inference_embed()(x)
    assert torch.allclose(folded, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    from deepcluster.models.net import fold_batchnorm

    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in fold_batchnorm(m.features).modules())
    # ... and each max-pool before the ReLU it followed (the same values on a quarter of the elements), save the
    # last conv block's, whose ReLU output the conv grid reads
    body = list(m.inference_embed().body)
    assert isinstance(body[-1], torch.nn.ReLU) and any(isinstance(x, torch.nn.MaxPool2d) for x in body)
    assert not any(isinstance(a, torch.nn.ReLU) and isinstance(b, torch.nn.MaxPool2d) for a, b in zip(body, body[1:]))
    # the same pass can also give the last conv block, pooled as the probes pool it: fc unchanged, conv as read
    # from conv_outputs (the closing evaluation reads both from one pass)
    from deepcluster.evaluate.layers import pool

    with torch.no_grad():
        both, conv = m.inference_embed(conv_grid=3)(x), pool(m.conv_outputs(x)[-1], 3)
    assert torch.equal(both[:, :m.feature_dim], folded) and both.shape[1] == m.feature_dim + conv.shape[1]
    assert torch.allclose(both[:, m.feature_dim:], conv, rtol=1e-4, atol=1e-4 * conv.abs().max().item())


def test_a_reduced_precision_inference_network_computes_what_autocast_does_on_its_own_copy():
    """bf16 weights cast once: the same outputs as autocast, which casts them at every batch, and the network's
    own weights untouched (it goes on training in fp32)."""
    torch.manual_seed(0)
    m = build_model("small", 3, 32, sobel=True).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        with torch.autocast("cpu", torch.bfloat16):
            ref = m.inference_embed(conv_grid=2)(x)
        cast = m.inference_embed(conv_grid=2, dtype=torch.bfloat16)(x)
    assert cast.dtype == torch.bfloat16 and torch.equal(cast, ref)
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in m.state_dict().items())
