"""The CUDA paths: mixed precision, the clustering input projected on the GPU, k-means on the GPU, a whole run.
They need a CUDA GPU and are skipped without one (CI has none; they are run on a GPU machine, see
docs/scaling.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcluster import train
from deepcluster.checkpoint import load_checkpoint
from deepcluster.clustering import KMeans
from deepcluster.device import amp_dtype
from deepcluster.features import Reading
from deepcluster.session import datasets, fresh_network
from deepcluster.space import Fitting, clustering_input

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_precision_is_bf16_on_cuda_and_full_on_cpu():
    assert amp_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    assert amp_dtype("auto", torch.device("cpu")) is None


def test_int8_extraction_on_cuda_is_refused_before_anything_is_written(tiny_config, tmp_path):
    from deepcluster import Config, ConfigError

    with pytest.raises(ConfigError, match="int8 runs on CPUs only"):
        train(Config(**{**tiny_config.__dict__, "device": "cuda", "extract_precision": "int8"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_clustering_input_on_the_gpu_matches_the_cpu(tiny_config, monkeypatch):
    # cuDNN's fp32 convolutions use TF32 by default (10-bit mantissas): off, so that the comparison is of our code
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = tiny_config
    cfg.precision, cfg.pca_sample = "fp32", 20  # 36 images: 16 are projected on the device while extracted
    data, _ = datasets(cfg)
    got = {}
    for dev in ("cpu", "cuda"):
        device = torch.device(dev)
        fitting = Fitting("whitened", np.random.default_rng(0), cfg.pca_dim, cfg.pca_sample)
        got[dev] = clustering_input(fresh_network(cfg, data.channels, device), data, device,
                                    Reading(cfg.batch_size), fitting)[1]
    np.testing.assert_allclose(got["cuda"], got["cpu"], atol=2e-3)


def test_kmeans_runs_on_the_gpu_and_matches_the_same_algorithm_on_the_cpu():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centres, truth = rng.standard_normal((8, 32)) * 5, rng.integers(8, size=4000)
    x = (centres[truth] + rng.standard_normal((4000, 32))).astype(np.float32)
    # the same draws on both devices: the same partition, the right one, and the same objective up to rounding
    gpu = KMeans(8, 20, seed=0, init="k-means++", n_init=3, backend="torch", device="cuda").fit(x)
    cpu = KMeans(8, 20, seed=0, init="k-means++", n_init=3, backend="torch", device="cpu").fit(x)
    assert gpu.backend_.startswith("torch:cuda") and cpu.backend_ == "torch:cpu"
    assert adjusted_rand_score(cpu.labels_, gpu.labels_) == 1.0
    assert adjusted_rand_score(truth, gpu.labels_) == 1.0
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-4)
    # and device="auto" takes the GPU by itself (faiss's GPU index when faiss has one, else PyTorch)
    assert KMeans(8, 5, seed=0).fit(x).backend_.split(":")[1] == "cuda"


def test_pic_searches_its_graph_on_the_gpu_and_finds_the_cpus_clusters():
    from sklearn.metrics import normalized_mutual_info_score

    from deepcluster.clustering import PIC

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    x = (x[rng.integers(0, 200, 20000)] + 0.3 * rng.standard_normal((20000, 64))).astype(np.float32)
    gpu, cpu = PIC(device="cuda").fit(x), PIC(device="cpu", graph="exact").fit(x)
    assert gpu.graph_ == "exact:faiss-gpu" or gpu.graph_.startswith("exact:torch:cuda")
    assert normalized_mutual_info_score(cpu.labels_, gpu.labels_) > 0.999


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_run_trains_on_cuda_in_mixed_precision_and_its_checkpoint_loads_on_cpu(tiny_config, tmp_path, precision):
    tiny_config.device, tiny_config.precision, tiny_config.report = "cuda", precision, False
    out = train(tiny_config, tmp_path / "run", quiet=True)
    assert [r["epoch"] for r in out["metrics"]] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in out["metrics"])
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())


def test_nvjpeg_decodes_a_prepared_folder_as_the_cpu_does_and_a_run_on_it_trains(tiny_config, image_folder, tmp_path):
    import dataclasses

    from deepcluster.data import PreparedImages, decodes_on_device, make_loader, prepare
    from deepcluster.views import center_view

    prepare(image_folder, tmp_path / "p", image_size=32, workers=0, progress=False)
    cuda = torch.device("cuda")
    for load_size in (32, 24):
        prep = PreparedImages(tmp_path / "p", load_size)
        assert decodes_on_device(prep, cuda)  # auto: on the GPU for a CUDA run
        got = torch.cat([b[0].cpu() for b in make_loader(prep, range(len(prep)), 16, 0, device=cuda)])
        want = torch.stack([prep[i][0] for i in range(len(prep))])
        # nvJPEG's IDCT and colour conversion round differently from libjpeg-turbo's: a grey level or so
        diff = (got.float() - want.float()).abs()
        assert diff.mean() < 1.0 and diff.max() <= 16, (load_size, diff.mean().item(), diff.max().item())
        crops = [center_view(x, 20, prep.mean, prep.std) for x in (got, want)]
        assert (crops[0] - crops[1]).abs().mean() < 0.02
    cfg = dataclasses.replace(tiny_config, data=str(tmp_path / "p"), cache_gb=0, device="cuda", report=False)
    out = train(cfg, tmp_path / "run", quiet=True)
    assert all(np.isfinite(r["loss"]) for r in out["metrics"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_reduced_precision_inference_network_and_our_sgd_on_cuda_match_their_references(dtype):
    """On the GPU too: the folded network with its weights cast once computes what autocast computes (cuDNN may
    pick other algorithms: to half-precision rounding), and our SGD takes torch.optim.SGD's steps."""
    from deepcluster.models import build_model
    from deepcluster.training.sgd import SGD

    torch.manual_seed(0)
    m = build_model("small", 3, 32, sobel=True).cuda().eval()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        with torch.autocast("cuda", dtype):
            ref = m.inference_embed(conv_grid=2)(x).float()
        got = m.inference_embed(conv_grid=2, dtype=dtype)(x).float()
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
    nets = [torch.nn.Linear(6, 3).cuda() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [SGD(nets[0].parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
            torch.optim.SGD(nets[1].parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)]
    for _ in range(3):
        xb = torch.randn(4, 6, device="cuda")
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(xb).square().sum().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b)
