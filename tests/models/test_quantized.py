"""The int8 extraction pass: close to fp32, the same whatever the batches, and clustering as fp32 does; the rules
that choose it."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import assert_resume_is_exact, make_image

from deepcluster import Config, TensorImages, device
from deepcluster.clustering import KMeans
from deepcluster.config import ConfigError
from deepcluster.device import INT8_FROM, check_extraction, extraction_dtype, kept_dtype, settled_precisions
from deepcluster.evaluate import nmi
from deepcluster.features import Reading, centre_view_features
from deepcluster.models import build_model
from deepcluster.models.quantized import calibration_indices, int8_embed
from deepcluster.preprocess import PCAWhitening, l2_normalize
from deepcluster.space import Fitting, clustering_input

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def three_kinds() -> TensorImages:
    """150 colour 32 px images: disks, horizontal and vertical stripes."""
    rng = np.random.default_rng(3)
    imgs = np.stack([make_image(i % 3, rng, 32) for i in range(150)]).transpose(0, 3, 1, 2)
    return TensorImages(torch.from_numpy(np.ascontiguousarray(imgs)), np.arange(150) % 3, ("d", "h", "v"))


def test_int8_features_are_close_to_fp32_and_do_not_depend_on_the_batches():
    torch.manual_seed(0)
    model = build_model("alexnet", 3, 96).eval()  # AlexNet's layers (Sobel, 11x11/4 conv, pools, fc 4096)
    x = torch.randn(24, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model.inference_embed()(x)
        q = int8_embed(model, x[:8])
        whole, split = q(x), torch.cat([q(x[:5]), q(x[5:17]), q(x[17:])])
    err = ((whole - ref).norm() / ref.norm()).item()
    assert 1e-4 < err < 0.08, err  # quantised (not fp32 passed through), yet within a few percent
    assert torch.equal(whole, split)  # integer sums are exact: any batching, any split between processes
    with torch.inference_mode():  # with the last conv layer pooled beside the fc features, from the same pass
        ref, both = model.inference_embed(conv_grid=2)(x), int8_embed(model, x[:8], conv_grid=2)(x)
    assert both.shape == ref.shape and ((both - ref).norm() / ref.norm()).item() < 0.08


def _int8_linears(net) -> int:
    return sum("quantized" in type(m).__module__ and "Linear" in type(m).__name__ for m in net.modules())


def test_the_fc_block_is_quantised_only_for_passes_long_enough_to_pay_its_packing(three_kinds, monkeypatch):
    import deepcluster.features as features

    torch.manual_seed(0)
    model = build_model("small", 3, 32)
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model.inference_embed()(x)
        whole, conv_only = int8_embed(model, x), int8_embed(model, x, quantise_fc=False)
        errs = [((q(x) - ref).norm() / ref.norm()).item() for q in (whole, conv_only)]
    assert _int8_linears(whole) >= 2 and _int8_linears(conv_only) == 0
    assert 1e-4 < errs[1] < 0.08 and errs[1] < errs[0], errs  # still quantised, one rounding fewer
    # the dataset's size decides: 150 images are below FC_INT8_FROM, and above a lowered one
    assert len(three_kinds) < features.FC_INT8_FROM
    assert _int8_linears(features.centre_view_embedding(model, three_kinds, torch.qint8)[1]) == 0
    monkeypatch.setattr(features, "FC_INT8_FROM", 100)
    assert _int8_linears(features.centre_view_embedding(model, three_kinds, torch.qint8)[1]) >= 2


@pytest.mark.parametrize("fc_int8_from", [10 ** 9, 0])  # the fc block in fp32 (as for 150 images), and in int8
def test_the_int8_clustering_is_the_fp32_one(three_kinds, monkeypatch, fc_int8_from):
    import deepcluster.features as features

    monkeypatch.setattr(features, "FC_INT8_FROM", fc_int8_from)
    agree, truth = [], []
    for seed in range(4):  # random networks: one network's k-means can sit on a boundary, so several
        torch.manual_seed(seed)
        model = build_model("small", 3, 32)
        f32 = centre_view_features(model, three_kinds, CPU, Reading(32, desc=None))
        i8 = centre_view_features(model, three_kinds, CPU, Reading(32, amp=torch.qint8, desc=None))
        assert not np.array_equal(f32, i8)
        labels = [KMeans(3, n_iter=20, seed=0).fit(l2_normalize(PCAWhitening(16).fit_transform(f))).labels_
                  for f in (f32, i8)]
        agree.append(nmi(labels[0], labels[1]))
        truth.append([nmi(x, three_kinds.targets) for x in labels])
    # for scale: two k-means seeds on the same fp32 features of Fashion-MNIST agree at 0.77 (docs/scaling.md)
    assert np.mean(agree) > 0.8, agree
    gap = np.abs(np.diff(truth, axis=1)).mean()
    assert gap < 0.05, truth


def test_an_epoch_quantises_once_though_it_extracts_in_two_passes(three_kinds, monkeypatch):
    import deepcluster.features as features

    torch.manual_seed(1)
    model, made = build_model("small", 3, 32), []
    monkeypatch.setattr(features, "int8_embed", lambda *a, **kw: made.append(1) or int8_embed(*a, **kw))
    # more images than the PCA sample: the sample is extracted first, then the rest projected as it comes
    rng = lambda: np.random.default_rng(0)
    _, x = clustering_input(model, three_kinds, CPU, Reading(32, amp=torch.qint8, desc=None),
                            Fitting("whitened", rng(), pca_dim=8, pca_sample=100))
    assert len(made) == 1
    # the same clustering input as from the int8 features of every image, whitened on the same sample
    f = centre_view_features(model, three_kinds, CPU, Reading(32, amp=torch.qint8, desc=None))
    fit = np.sort(rng().choice(150, 100, replace=False))
    expect = l2_normalize(PCAWhitening(8).fit(f[fit]).transform(f))
    np.testing.assert_allclose(x, expect, atol=1e-4)


def test_calibration_images_are_spread_over_the_dataset():
    idx = calibration_indices(10_000)
    assert len(idx) == 64 and idx[0] == 0 and idx[-1] == 9_999 and np.all(np.diff(idx) > 100)
    assert list(calibration_indices(5)) == [0, 1, 2, 3, 4]


def test_the_extraction_precision_rules(monkeypatch):
    rule = lambda extract, precision, device=CPU, images=INT8_FROM: extraction_dtype(
        Config(extract_precision=extract, precision=precision), device, images)
    assert rule("int8", "fp32", images=10) is torch.qint8
    assert rule("int8", "fp16", torch.device("cuda")) is torch.float16  # a resumed run on a GPU extracts as it trains
    with pytest.raises(ConfigError, match="int8 runs on CPUs only"):  # a new one is refused
        check_extraction(Config(extract_precision="int8"), torch.device("cuda"))
    check_extraction(Config(extract_precision="int8"), CPU)
    assert rule("bf16", "fp32") is torch.bfloat16
    assert rule("training", "bf16") is torch.bfloat16
    kept = lambda extract, precision: kept_dtype(Config(extract_precision=extract, precision=precision), CPU)
    for vnni, bf16 in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda h=vnni: h, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda h=vnni and bf16: h, raising=False)
        monkeypatch.setattr(device, "bf16_products", lambda h=bf16: h)
        assert rule("auto", "auto") is (torch.qint8 if vnni else None)
        assert rule("auto", "fp16") is (torch.qint8 if vnni else torch.float16)
        # below INT8_FROM (seconds to gain, noise to lose): bf16 where the CPU multiplies it, else as training
        assert rule("auto", "auto", images=INT8_FROM - 1) is (torch.bfloat16 if bf16 else None)
        assert rule("auto", "fp16", images=INT8_FROM - 1) is torch.float16
        assert rule("fp32", "auto") is None
        assert rule("auto", "auto", torch.device("cuda")) is rule("training", "auto", torch.device("cuda"))
        # what the run keeps and evaluates (epoch 1, the final pass): the extraction's float type, never int8
        assert kept("auto", "auto") is (torch.bfloat16 if bf16 else None)
        assert kept("int8", "fp32") is None and kept("int8", "bf16") is torch.bfloat16
        # a run records what "auto" was on this machine, and the recorded settings compute the same
        for images in (INT8_FROM - 1, INT8_FROM):
            cfg = Config(extract_precision="auto", precision="auto")
            settled = dataclasses.replace(cfg, **settled_precisions(cfg, CPU, images))
            assert settled.precision == "fp32" and settled.extract_precision in ("int8", "bf16", "fp32")
            assert extraction_dtype(settled, CPU, images) is extraction_dtype(cfg, CPU, images)


def test_bf16_is_taken_only_where_the_cpu_multiplies_it(monkeypatch):
    flags = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for amx, avx512_bf16 in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, flags[0], lambda h=amx: h, raising=False)
        monkeypatch.setattr(torch.cpu, flags[1], lambda h=avx512_bf16: h, raising=False)
        # AMX tiles or AVX-512 BF16 dot products (as oneDNN uses them); without either, bf16 would be emulated
        native = (amx or avx512_bf16) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        assert device.bf16_products() is native
        assert kept_dtype(Config(), CPU) is (torch.bfloat16 if native else None)


def test_a_run_extracting_in_int8_trains_and_resumes_exactly(tiny_config, tmp_path):
    """Epoch 2 clusters int8 features (epoch 1 the training precision's); killed after epoch 1 and resumed, the
    run ends bit for bit as the uninterrupted one."""
    cfg = dataclasses.replace(tiny_config, extract_precision="int8", epochs=3)
    assert_resume_is_exact(cfg, tmp_path)
