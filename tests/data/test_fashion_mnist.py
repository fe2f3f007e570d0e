"""On the real Fashion-MNIST files (Debian's dataset-fashion-mnist)."""
import numpy as np
import pytest
from conftest import open_page

from deepcluster import Config, fashion_mnist, train
from deepcluster.visualize.report import SECTIONS


@pytest.mark.slow
def test_fashion_mnist_files_and_a_short_run(tmp_path, browser):
    tr, te = fashion_mnist("train"), fashion_mnist("test")
    assert tuple(tr.images.shape) == (60000, 1, 28, 28) and tuple(te.images.shape) == (10000, 1, 28, 28)
    assert np.bincount(tr.targets).tolist() == [6000] * 10 and np.bincount(te.targets).tolist() == [1000] * 10
    assert 0.27 < tr.images.float().mean().item() / 255 < 0.30  # the dataset's known mean pixel, 0.286

    cfg = Config(data="fashion-mnist", subset=3000, recipe="paper", arch="small", k=30, epochs=2, eval_seeds=1,
                 device="cpu")
    summary = train(cfg, tmp_path / "run", quiet=True)
    rows = summary["metrics"]
    assert len(rows) == 2 and all(0.2 < r["nmi_labels"] < 1 for r in rows)
    ev = summary["eval"]
    assert ev["images"] == 10000 and ev["split"] == "fashion-mnist/test"
    # pixels of Fashion-MNIST cluster well above chance (NMI ~0.5 with k = 10): the protocol measures real signal
    rows = {(r["features"], r["preprocessing"]): r for r in ev["results"]}
    assert 0.4 < rows["pixels", "raw"]["nmi"] < 0.6 and 0.4 < rows["pixels", "L2"]["nmi"] < 0.65
    assert rows["trained", "L2"]["nmi"] > 0.2
    # its report opens whole in a real browser
    info = open_page(browser, tmp_path / "run" / "report" / "index.html", tmp_path / "report.png")
    assert info["broken"] == [] and info["errors"] == [] and info["sections"] == list(SECTIONS)
    assert "fashion-mnist/train, 3000 images" in info["text"] and info["images"] >= 8
