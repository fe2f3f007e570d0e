"""``deepcluster prepare``: a folder written once into JPEG shards, read back as the same images, resumed after an
interruption, never taken for data while half-written."""
import dataclasses

import numpy as np
import pytest
import torch

from deepcluster import ConfigError, train
from deepcluster.cli import main
from deepcluster.data import ImageFolder, PreparedImages, TensorImages, in_memory, open_folder, prepare
from deepcluster.data import prepared as prepared_module
from deepcluster.session import datasets


def _same_shards(a, b):
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_prepared_folder_holds_the_folders_images_files_and_labels(image_folder, tmp_path):
    done = prepare(image_folder, tmp_path / "p", image_size=32, quality=100, workers=0, progress=False)
    raw, prep = ImageFolder(image_folder, 32), open_folder(tmp_path / "p", 32)
    assert isinstance(prep, PreparedImages) and done["images"] == len(prep) == len(raw) == 36
    assert prep.files == raw.files and prep.sizes == raw.sizes and prep.classes == raw.classes
    np.testing.assert_array_equal(prep.targets, raw.targets)
    # the same squares, up to JPEG's rounding at quality 100; items and batches alike
    batch, idx = prep.__getitems__([5, 0, 17])
    assert idx.tolist() == [5, 0, 17] and batch.shape == (3, 3, 32, 32) and batch.dtype == torch.uint8
    for j, i in enumerate((5, 0, 17)):
        assert torch.equal(batch[j], prep[i][0])
        diff = (prep[i][0].float() - raw[i][0].float()).abs()
        assert diff.mean() < 1.5 and diff.max() < 40, i
    # a smaller load size is the same centre square, resized; a larger one is refused
    small = PreparedImages(tmp_path / "p", 16)
    assert small[3][0].shape == (3, 16, 16)
    expect = torch.nn.functional.interpolate(prep[3][0][None].float(), size=(16, 16), mode="bilinear",
                                             antialias=True)[0]
    assert (small[3][0].float() - expect).abs().max() <= 1
    with pytest.raises(ConfigError, match="prepared at 32 px and this run loads 64 px"):
        PreparedImages(tmp_path / "p", 64)
    # subsets keep files, labels and bytes aligned
    sub = prep.take([4, 30])
    assert sub.files == [raw.files[4], raw.files[30]] and sub.targets.tolist() == raw.targets[[4, 30]].tolist()
    assert torch.equal(sub[1][0], prep[30][0])
    # decoded into memory when it fits, as a raw folder is
    mem = in_memory(prep, 1.0, 0, desc=None)
    assert isinstance(mem, TensorImages) and all(torch.equal(mem[i][0], prep[i][0]) for i in range(36))
    # a finished folder is left as it is when asked again with the same settings
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "p").iterdir()}
    assert prepare(image_folder, tmp_path / "p", image_size=32, quality=100, progress=False)["already"]
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "p").iterdir()}
    with pytest.raises(ConfigError, match="other images or settings"):
        prepare(image_folder, tmp_path / "p", image_size=32, quality=90, progress=False)


def test_an_interrupted_prepare_is_refused_as_data_and_resumes_to_the_same_bytes(image_folder, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(prepared_module, "SHARD", 8)  # 36 images: 5 shards
    prepare(image_folder, tmp_path / "whole", image_size=32, workers=0, progress=False)
    encode = prepared_module._Encoder.__getitem__

    def failing(self, i):
        if i == 19:
            raise KeyboardInterrupt  # the user stops it, or the machine goes away
        return encode(self, i)

    monkeypatch.setattr(prepared_module._Encoder, "__getitem__", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(image_folder, tmp_path / "cut", image_size=32, workers=0, progress=False)
    # two whole shards; the third cut short; no manifest: not data
    assert sorted(p.name for p in (tmp_path / "cut").glob("*.idx.npy")) == ["shard-00000.idx.npy",
                                                                             "shard-00001.idx.npy"]
    for opener in (lambda: open_folder(tmp_path / "cut", 32), lambda: PreparedImages(tmp_path / "cut")):
        with pytest.raises(ConfigError, match="not finished: run 'deepcluster prepare'"):
            opener()
    with pytest.raises(ConfigError, match="not finished"):
        datasets(dataclasses.replace(_cfg(tmp_path / "cut"), cache_gb=0))
    monkeypatch.setattr(prepared_module._Encoder, "__getitem__", encode)
    done = prepare(image_folder, tmp_path / "cut", image_size=32, workers=0, progress=False)
    assert done["done_before"] == 2 and done["shards"] == 5
    _same_shards(tmp_path / "cut", tmp_path / "whole")
    # a shard whose bytes do not add up to its index is written again
    data = tmp_path / "cut" / "shard-00003.bin"
    (tmp_path / "cut" / "prepared.json").unlink()
    (tmp_path / "cut" / "prepare.partial.json").write_text((tmp_path / "whole" / "prepared.json").read_text()
                                                          .replace(', "shards": 5', ""))
    data.write_bytes(data.read_bytes()[:-10])
    assert prepare(image_folder, tmp_path / "cut", image_size=32, workers=0, progress=False)["done_before"] == 4
    _same_shards(tmp_path / "cut", tmp_path / "whole")


def _cfg(data):
    from deepcluster import Config

    return Config(data=str(data), image_size=32, arch="small", device="cpu")


def test_prepare_refuses_what_would_touch_the_source_or_another_folder(image_folder, tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    cases = [([str(image_folder), str(image_folder / "inside")], "lies inside the source folder"),
             ([str(image_folder), str(other)], "exists and is not empty"),
             ([str(tmp_path / "nothing"), str(tmp_path / "out")], "does not exist")]
    for argv, message in cases:
        assert main(["prepare", *argv, "--image-size", "32"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert (other / "notes.txt").read_text() == "keep me" and not (image_folder / "inside").exists()
    assert main(["prepare", str(image_folder), str(tmp_path / "p"), "--image-size", "32", "--workers", "0"]) == 0
    assert "prepared 36 images at 32 px into 1 shard(s)" in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "p"), str(tmp_path / "q")]) == 2
    assert "is itself a prepared folder" in capsys.readouterr().err


def test_a_run_on_a_prepared_folder_trains_and_exports_its_source_files(tiny_config, image_folder, tmp_path):
    from deepcluster.export.table import export_clusters

    prepare(image_folder, tmp_path / "p", image_size=32, workers=0, progress=False)
    cfg = dataclasses.replace(tiny_config, data=str(tmp_path / "p"), cache_gb=0)
    assert isinstance(datasets(cfg)[0], PreparedImages)
    train(cfg, tmp_path / "run", quiet=True)
    export_clusters(tmp_path / "run")
    rows = (tmp_path / "run" / "clusters.csv").read_text().splitlines()
    names = sorted(r.split(",")[0] for r in rows[1:])
    assert names == sorted(str(f.relative_to(image_folder)) for f in ImageFolder(image_folder, 32).files)


def test_a_full_disk_while_preparing_is_one_line_and_keeps_the_shards_written(image_folder, tmp_path, monkeypatch):
    import errno

    monkeypatch.setattr(prepared_module, "SHARD", 16)
    save = np.save

    def full(path, *a, **k):
        if "shard-00001" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(path, *a, **k)

    monkeypatch.setattr(prepared_module.np, "save", full)
    with pytest.raises(ConfigError, match=r"shard-00001.bin \(No space left on device\); the shards written so far "
                                          r"are kept"):
        prepare(image_folder, tmp_path / "p", image_size=32, workers=0, progress=False)
    monkeypatch.setattr(prepared_module.np, "save", save)
    assert prepare(image_folder, tmp_path / "p", image_size=32, workers=0, progress=False)["done_before"] == 1


def test_batches_decoded_on_the_device_are_the_loaders_images_and_train_alike(tiny_config, image_folder, tmp_path):
    from deepcluster.data import DeviceBatches, decodes_on_device, make_loader

    prepare(image_folder, tmp_path / "p", image_size=32, workers=0, progress=False)
    cpu = torch.device("cpu")
    for load_size in (32, 24):  # as prepared, and resized on the device
        prep = PreparedImages(tmp_path / "p", load_size)
        order = [7, 3, 30, 0, 12, 35, 1]
        assert not decodes_on_device(prep, cpu)  # auto: the loader decodes on a CPU run
        prep.decoding = "device"
        assert decodes_on_device(prep, cpu) and not decodes_on_device(prep, None)
        loader = make_loader(prep, order, 3, 0, device=cpu)
        assert isinstance(loader, DeviceBatches) and len(loader) == 3
        batches = list(loader)
        assert [b[0].shape[0] for b in batches] == [3, 3, 1]
        images, idx = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        assert idx.tolist() == order and images.dtype == torch.uint8
        assert images.shape == (7, 3, load_size, load_size)
        for j, i in enumerate(order):  # the same pixels as the per-item path the loader's processes run
            assert torch.equal(images[j], prep[i][0]), (load_size, i)
        # undecoded batches cross process boundaries as one buffer and decode the same
        workers = list(make_loader(prep, order[:4], 4, 1, device=cpu))
        assert torch.equal(workers[0][0], images[:4])
    # a run on the prepared folder with --decode device makes the weights of the run the loader decodes for
    cfg = dataclasses.replace(tiny_config, data=str(tmp_path / "p"), cache_gb=0, epochs=2, report=False)
    weights = {}
    for decode in ("cpu", "device"):
        train(dataclasses.replace(cfg, decode=decode), tmp_path / decode, quiet=True)
        weights[decode] = torch.load(tmp_path / decode / "checkpoint.pt", weights_only=False)["model"]
    assert weights["cpu"].keys() == weights["device"].keys()
    assert all(torch.equal(weights["cpu"][k], weights["device"][k]) for k in weights["cpu"])


def test_prepare_stores_by_default_what_train_reads_with_the_defaults(image_folder, tmp_path, capsys, monkeypatch):
    from deepcluster.cli.commands import recipe_input_size

    assert main(["prepare", str(image_folder), str(tmp_path / "p"), "--workers", "0"]) == 0
    assert "at 32 px" in capsys.readouterr().out  # 36 small pictures: the recipe's small net reads 32 px
    assert PreparedImages(tmp_path / "p").prepared_size == 32
    assert main(["prepare", str(image_folder), str(tmp_path / "p")]) == 0  # done: its own choice stands
    assert "already holds" in capsys.readouterr().out
    # an ImageNet-like folder (over 100,000 images of 128 px or more) is stored for AlexNet's 224 px
    big = ImageFolder(image_folder, 32)
    monkeypatch.setattr(big, "files", big.files * 3000)
    monkeypatch.setattr(big, "sizes", [(500, 375)] * len(big.files))
    assert recipe_input_size(big) == 224
