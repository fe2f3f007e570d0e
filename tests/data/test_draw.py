"""Seeded draws: --subset and the closing evaluation's sample keep every class's share; the cache decision reads
the memory the kernel can give."""
import dataclasses

import numpy as np
import pytest

from deepcluster.data import ImageFolder, draw_indices


def test_a_draw_is_seeded_distinct_sorted_and_keeps_each_class_share():
    targets = np.repeat(np.arange(4), [500, 300, 150, 50])  # sorted by class, as a folder of subfolders is
    a = draw_indices(len(targets), 100, targets, seed=3)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert np.bincount(targets[a]).tolist() == [50, 30, 15, 5]  # the shares, exactly
    np.testing.assert_array_equal(a, draw_indices(len(targets), 100, targets, seed=3))
    assert not np.array_equal(a, draw_indices(len(targets), 100, targets, seed=4))
    # a class too small for its share keeps one image; the others pay for it
    few = draw_indices(len(targets), 5, targets, seed=0)
    assert len(few) == 5 and set(targets[few]) == {0, 1, 2, 3}
    # unlabelled: uniform over the whole range, not the first images
    u = draw_indices(10_000, 1000, None, seed=0)
    assert len(np.unique(u)) == 1000 and u.min() < 100 and u.max() > 9_900
    np.testing.assert_array_equal(draw_indices(7, 9, targets[:7], seed=0), np.arange(7))  # all of them


def test_subset_draws_from_every_class_of_a_folder_sorted_by_class(image_folder, tiny_config):
    from deepcluster.session import training_images

    folder = ImageFolder(image_folder, 32)  # 3 classes x 12, in sorted (class) order
    got = training_images(dataclasses.replace(tiny_config, subset=9))
    assert len(got) == 9 and np.bincount(got.targets).tolist() == [3, 3, 3]
    assert set(got.files) <= set(folder.files)
    again = training_images(dataclasses.replace(tiny_config, subset=9))
    assert got.files == again.files  # seeded by --seed
    assert training_images(dataclasses.replace(tiny_config, subset=9, seed=1)).files != got.files
    first = training_images(dataclasses.replace(tiny_config, subset=9, subset_draw="first"))
    assert first.files == folder.files[:9] and set(first.targets) == {0}


def test_a_fashion_mnist_subset_keeps_its_ten_classes():
    from deepcluster.config import Config
    from deepcluster.session import training_images

    got = training_images(Config(subset=50))
    assert len(got) == 50 and np.bincount(got.targets).tolist() == [5] * 10


def test_the_cache_decision_reads_the_available_memory_not_the_free_pages(tmp_path, image_folder, monkeypatch):
    from deepcluster.data import TensorImages, cache, in_memory

    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemFree:          100000 kB\nMemAvailable:   20000000 kB\n")
    no_cgroup = tmp_path / "none"
    assert cache.available_memory(str(info), str(no_cgroup)) == 20_000_000 * 1024  # the page cache counts
    group = tmp_path / "cgroup"
    group.mkdir()
    (group / "memory.max").write_text("8589934592\n")  # a container of 8 GiB, 6 GiB of it in use
    (group / "memory.current").write_text(str(6 * 2 ** 30) + "\n")
    assert cache.available_memory(str(info), str(group)) == 2 * 2 ** 30
    (group / "memory.max").write_text("max\n")
    assert cache.available_memory(str(info), str(group)) == 20_000_000 * 1024
    folder = ImageFolder(image_folder, 32)
    need = len(folder) * 3 * 32 * 32
    monkeypatch.setattr(cache, "available_memory", lambda: 2 * need + 1)
    assert isinstance(in_memory(folder, budget_gb=1.0, desc=None), TensorImages)
    monkeypatch.setattr(cache, "available_memory", lambda: 2 * need - 1)  # would take over half of it
    assert in_memory(folder, budget_gb=1.0, desc=None) is folder


@pytest.mark.parametrize("mode", ["sample", "full"])
def test_the_closing_evaluation_scores_a_bounded_stratified_sample(tiny_config, tmp_path, mode):
    import json

    from deepcluster import train

    cfg = dataclasses.replace(tiny_config, epochs=1, report=False, eval=mode, eval_images=12)
    out = train(cfg, tmp_path / mode, quiet=True)
    ev = json.loads((tmp_path / mode / "eval.json").read_text())
    assert ev["of"] == 36 and ev["images"] == (12 if mode == "sample" else 36)
    assert ev["knn"]["database"] == "leave-one-out" and ev["knn"]["database_images"] == ev["images"]
    assert out["eval"] == ev


def test_no_closing_evaluation_with_eval_none(tiny_config, tmp_path, capsys):
    from deepcluster import train

    train(dataclasses.replace(tiny_config, epochs=1, report=False, eval="none"), tmp_path / "r")
    assert not (tmp_path / "r" / "eval.json").exists()
    assert "closing evaluation: skipped (--eval none)" in capsys.readouterr().out


def test_the_knn_database_is_drawn_down_to_its_budget(tensor_images):
    import torch

    from deepcluster.config import Config
    from deepcluster.evaluate.closing import closing_grid, closing_splits, evaluate_features
    from deepcluster.session import fresh_network
    from deepcluster.train import closing_options

    n = len(tensor_images)
    val = tensor_images.take(range(0, n, 3))  # both classes
    scored, db, of = closing_splits(tensor_images, val, "sample", 4, seed=0)
    assert db is tensor_images and len(scored) == min(4, len(val)) and of == len(val)
    cfg = Config(data="fashion-mnist", arch="small", image_size=tensor_images.load_size, k=3, pca_dim=4,
                 batch_size=16,
                 eval_seeds=1, device="cpu")
    device = torch.device("cpu")
    model = fresh_network(cfg, tensor_images.channels, device)
    width = model.feature_dim + closing_grid(model, tensor_images.channels, device)[1]
    how = dataclasses.replace(closing_options(cfg, device, None), database_gb=6.5 * width * 4 / 2 ** 30)
    ev = evaluate_features(model, scored, device, how, db, of=of)
    assert ev["knn"]["database_images"] == 6 and ev["images"] == len(scored) and ev["of"] == len(val)
