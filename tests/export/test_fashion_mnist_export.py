"""A grey network (trained on Fashion-MNIST) meets colour images: they are converted, and the command says so."""
import csv

import numpy as np
import pytest
from PIL import Image

from deepcluster.cli import main


@pytest.mark.slow
def test_colour_images_are_converted_for_a_grey_network(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "fashion-mnist", "--subset", "300", "--epochs", "1", "--k", "5",
                 "--eval-seeds", "1", "--no-report", "--device", "cpu", "--out", str(run)]) == 0
    colour = tmp_path / "colour"
    colour.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(colour / f"{i}.png")
    capsys.readouterr()
    assert main(["assign", str(run), "--data", str(colour), "--out", str(tmp_path / "a.csv"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "the network takes 1-channel images" in out and "converted to grey" in out
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(0 <= int(r["cluster"]) < 5 for r in rows)
    assert main(["embed", str(run), "--data", "fashion-mnist:test", "--out", str(tmp_path / "t.npy"),
                 "--device", "cpu"]) == 0
    assert np.load(tmp_path / "t.npy", mmap_mode="r").shape[0] == 10_000
