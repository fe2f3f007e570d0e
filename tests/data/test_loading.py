"""Images decoded into memory and the loader's workers."""
import dataclasses

import numpy as np
import pytest
import torch

from deepcluster import train
from deepcluster.checkpoint import load_checkpoint


def test_a_folder_decoded_into_memory_trains_exactly_as_one_read_from_disk(tiny_config, image_folder, tmp_path):
    from deepcluster.data import ImageFolder, TensorImages, in_memory
    from deepcluster.session import datasets

    disk = ImageFolder(image_folder, 32)
    mem = in_memory(disk, budget_gb=1.0, desc=None)
    assert isinstance(mem, TensorImages) and len(mem) == len(disk) == 36 and mem.name == disk.name
    np.testing.assert_array_equal(mem.targets, disk.targets)
    assert all(torch.equal(mem[i][0], disk[i][0]) for i in range(len(disk)))
    assert in_memory(disk, budget_gb=36 * 3 * 32 * 32 / 2 ** 30 * 0.99, desc=None) is disk  # over the budget
    assert isinstance(datasets(tiny_config)[0], TensorImages)
    assert isinstance(datasets(dataclasses.replace(tiny_config, cache_gb=0))[0], ImageFolder)
    # the cache changes where the bytes come from, nothing else: same clusters, same weights
    train(tiny_config, tmp_path / "mem", quiet=True)
    train(dataclasses.replace(tiny_config, cache_gb=0), tmp_path / "disk", quiet=True)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("mem", "disk"))
    assert torch.equal(a["assignment"], b["assignment"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_loader_workers_default_to_none_on_cpus_and_in_memory_and_to_the_cores_on_gpu_machines(image_folder,
                                                                                                 monkeypatch):
    from deepcluster.data import ImageFolder, auto_workers, in_memory, make_loader

    files = ImageFolder(image_folder, 32)
    mem = in_memory(files, budget_gb=1.0, desc=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_workers(files) == 0 and make_loader(files, range(4), 2, None).num_workers == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: decoding is the bottleneck
    assert auto_workers(mem) == 0  # nothing to decode
    for cores, local_world, expected in ((64, 1, 16), (16, 1, 15), (16, 2, 7), (4, 1, 3), (1, 1, 1), (8, 8, 1)):
        monkeypatch.setattr("os.sched_getaffinity", lambda pid, c=cores: set(range(c)))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
        assert auto_workers(files) == expected, (cores, local_world)
    assert make_loader(files, range(4), 2, None).num_workers == 1
    assert make_loader(files, range(4), 2, 0).num_workers == 0  # asked for: obeyed


def test_a_prepared_folder_decoded_on_the_gpu_needs_only_two_workers_to_slice_its_shards(image_folder, tmp_path,
                                                                                        monkeypatch):
    from deepcluster.data import PreparedImages, auto_workers, prepare

    prepare(image_folder, tmp_path / "p", image_size=32, workers=0, progress=False)
    prep = PreparedImages(tmp_path / "p")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert auto_workers(prep, torch.device("cuda")) == 2  # nvJPEG decodes: the workers only read bytes
    assert auto_workers(prep) == 15 and auto_workers(prep, torch.device("cpu")) == 15  # the workers decode
    prep.decoding = "cpu"
    assert auto_workers(prep, torch.device("cuda")) == 15


def test_a_folder_too_large_for_the_cache_points_to_prepare(tiny_config, tmp_path, capsys):
    train(dataclasses.replace(tiny_config, cache_gb=1e-6, epochs=1, report=False), tmp_path / "big")
    out = capsys.readouterr().out
    assert "do not fit --cache-gb 1e-06" in out and f"'deepcluster prepare {tiny_config.data} DEST'" in out
    train(dataclasses.replace(tiny_config, cache_gb=0, epochs=1, report=False), tmp_path / "never")  # asked for
    train(dataclasses.replace(tiny_config, epochs=1, report=False), tmp_path / "fits")
    assert "note:" not in capsys.readouterr().out


def test_decoding_into_memory_takes_every_core_of_its_share_for_folders_worth_it(monkeypatch):
    from deepcluster.data.cache import decoding_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert [decoding_workers(n) for n in (36, 300, 600, 800, 100_000)] == [0, 0, 2, 3, 8]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four processes on the machine: two cores each
    assert decoding_workers(100_000) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert decoding_workers(100_000) == 0


@pytest.mark.parametrize("w,h", [(500, 375), (375, 500), (1000, 999), (40, 30), (257, 256), (256, 256)])
def test_the_load_view_resamples_only_the_centre_square_with_the_pixels_of_resize_then_crop(w, h):
    """square() resamples the source box that maps onto the centre square: what resizing the whole image (shorter
    side s, bilinear) and cropping its centre gives, to one grey level (PIL's rounding), never shifted."""
    from PIL import Image

    from deepcluster.data.folder import square

    rng = np.random.default_rng(w * h)
    # smooth content with a sharp edge off-centre: a shift of one pixel would show as a large difference
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), np.where(xx > w * 0.37, 220, 30)], 2).astype(np.uint8)
    arr = np.clip(arr.astype(int) + rng.integers(-3, 4, arr.shape), 0, 255).astype(np.uint8)
    im, s = Image.fromarray(arr), 256
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    whole = np.asarray(im.resize((nw, nh), Image.BILINEAR).crop((left, top, left + s, top + s)))
    got = square(im, s).permute(1, 2, 0).numpy()
    assert got.shape == (s, s, 3)
    assert np.abs(got.astype(int) - whole.astype(int)).max() <= 1


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_to_nearly_the_same_view(tmp_path):
    """A 2000 x 1500 JPEG for a 256 px load size is decoded at a quarter of its size (libjpeg's DCT scaling, via
    PIL's draft), still at least 256 px a side: the view within a few grey levels of decoding it whole."""
    from PIL import Image, JpegImagePlugin

    from deepcluster.data.folder import ImageFolder, read_rgb, square

    h, w = 1500, 2000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / 150) * np.cos(yy / 100), 128 + 80 * np.sin((xx + yy) / 80),
                    np.where(xx > 900, 200.0, 40.0)], 2)
    (tmp_path / "a").mkdir()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "a" / "big.jpg", quality=92)
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def record(self, mode, size):
        out = original(self, mode, size)
        drafts.append(self.size)
        return out

    ds = ImageFolder(tmp_path, 256)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JpegImagePlugin.JpegImageFile, "draft", record)
        got = ds[0][0]
    assert drafts == [(500, 375)]  # decoded at 1/4: the largest reduction that keeps both sides >= 256
    whole = square(read_rgb(tmp_path / "a" / "big.jpg"), 256)
    assert got.shape == whole.shape == (3, 256, 256)
    diff = (got.int() - whole.int()).abs()
    assert diff.float().mean() < 1.0 and diff.max() <= 8
