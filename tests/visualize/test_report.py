"""The run report, opened in a real headless browser: every picture loads, nothing is fetched, every section is
there; for a finished run, a run stopped after one epoch, a run without labels and odd images, and a run with
no epoch at all."""

import sys

import numpy as np
import pytest
import torch
from conftest import make_image, open_page
from PIL import Image

from deepcluster import Config, TensorImages, train
from deepcluster.cli import main
from deepcluster.models import build_model
from deepcluster.visualize import write_report
from deepcluster.visualize.report import SECTIONS, Drawn

pytestmark = pytest.mark.heavy  # opens the pages in a real browser


def assert_page_sound(browser, page, shot, min_images):
    info = open_page(browser, page, shot)
    assert info["broken"] == [] and info["errors"] == [] and info["external"] == []
    assert info["sections"] == list(SECTIONS)
    assert info["images"] >= min_images
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape[0] >= 900 and img.std() > 10  # a real page, not a blank one
    return info


def test_finished_run_report_in_the_browser(tiny_config, tmp_path, browser):
    out = tmp_path / "run"
    train(tiny_config, out, quiet=True)
    page = out / "report" / "index.html"
    html = page.read_text()
    assert 'http-equiv="refresh"' not in html  # finished: no reloading
    info = assert_page_sound(browser, page, tmp_path / "shot.png", min_images=8)
    text = info["text"]
    assert "finished" in text and "share of each label" not in text  # the picture's title is inside the PNG
    for piece in ("largest", "purest", "most mixed", "PCA-whitened 16 + L2", "32 conv1 kernels",
                  "pseudo-labels are kept in clusters/ (2 epochs)", "How many groups, and the tree",
                  "of the tree's cuts scores each number of groups K"):
        assert piece in text, piece
    # `deepcluster report` rebuilds the same page from the files alone
    page.unlink()
    assert main(["report", str(out), "--device", "cpu"]) == 0
    assert_page_sound(browser, page, tmp_path / "shot2.png", min_images=8)


@pytest.fixture
def odd_unlabelled_folder(tmp_path):
    """Images straight in the folder (no class subfolders, so no labels): grey, grey + alpha and palette PNGs
    of odd, non-square sizes."""
    rng = np.random.default_rng(3)
    root = tmp_path / "odd"
    root.mkdir()
    for i in range(24):
        a = make_image(i % 3, rng, 40)[:, :, 0]
        im = Image.fromarray(a).resize((23 + i, 37))
        im = {0: im, 1: im.convert("LA"), 2: im.convert("P")}[i % 3]
        im.save(root / f"{i:02d}.png")
    return root


def test_stopped_unlabelled_run_reports_progress(odd_unlabelled_folder, tmp_path, browser, monkeypatch):
    from deepcluster.training import DeepClusterV1

    cfg = Config(data=str(odd_unlabelled_folder), image_size=20, k=4, epochs=3, batch_size=8, reassign=1,
                 pca_dim=8, device="cpu")
    real_epoch = DeepClusterV1.epoch

    def stop_at_epoch_2(self, model, optimizer, dataset, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, model, optimizer, dataset, epoch)

    monkeypatch.setattr(DeepClusterV1, "epoch", stop_at_epoch_2)
    monkeypatch.setattr(sys.modules["deepcluster.train"], "REPORT_EVERY", 0.0)  # however short the epoch
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", quiet=True)
    page = tmp_path / "run" / "report" / "index.html"
    html = page.read_text()  # written by training after epoch 1
    assert 'http-equiv="refresh"' in html and "epoch 1 of 3" in html
    info = assert_page_sound(browser, page, tmp_path / "shot.png", min_images=6)
    assert "has no labels" in info["text"] and "random" in info["text"]
    assert not (tmp_path / "run" / "eval.json").exists()
    page.unlink()
    assert main(["report", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert "epoch 1 of 3" in page.read_text()
    # the run resumes afterwards, untouched by the report
    monkeypatch.setattr(DeepClusterV1, "epoch", real_epoch)
    assert len(train(cfg, tmp_path / "run", resume=True, quiet=True)["metrics"]) == 3
    assert 'http-equiv="refresh"' not in page.read_text()


def test_run_without_any_epoch_reports_its_config(tiny_config, tmp_path, browser, capsys):
    from deepcluster.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.write_config(tiny_config)  # a run killed during its first epoch leaves only its config
    assert main(["report", str(run.path), "--device", "cpu"]) == 0
    info = assert_page_sound(browser, run / "report" / "index.html", tmp_path / "shot.png", min_images=1)
    assert "No epoch has finished yet" in info["text"] and "pca_dim" in info["text"]


def test_one_and_two_channel_images_through_the_api(tensor_images, tmp_path, browser):
    cfg = Config(data="generated", k=3, epochs=2, image_size=28, sobel=False, batch_size=32)
    for channels in (1, 2):
        ds = tensor_images
        if channels == 2:
            ds = TensorImages(tensor_images.images.repeat(1, 2, 1, 1), tensor_images.targets, ("h", "v"),
                              mean=(0.5, 0.5), std=(0.5, 0.5))
        torch.manual_seed(0)
        model = build_model("small", channels, 28, sobel=False)
        assignment = np.arange(len(ds)) % 3
        history = [{"epoch": 1, "loss": 1.0, "nmi_labels": 0.2, "clusters": 3, "imbalance": 1.0}]
        page = write_report(tmp_path / f"c{channels}", cfg, history, Drawn(model, ds, assignment, final=False))
        assert_page_sound(browser, page, tmp_path / f"shot{channels}.png", min_images=8)


def test_the_cluster_browser_shows_every_cluster_with_its_central_images(tiny_config, tmp_path, browser):
    import dataclasses

    from deepcluster.data import ImageFolder
    from deepcluster.state import RunState
    from deepcluster.visualize.browser import Pages, write_cluster_browser

    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config, k=9), out, quiet=True)
    report = out / "report" / "index.html"
    info = open_page(browser, report, tmp_path / "report.png")
    assert "clusters/page-0001.html" in info["links"] and "the cluster browser" in info["text"]
    c = RunState.load(out).clustering
    labels, dist = c.labels[0], c.distances[0]
    # paginated: 2 clusters a page, every cluster on one page, largest first, most central images first
    data = ImageFolder(tiny_config.data, 32)
    pages = write_cluster_browser(tmp_path / "b", data, labels, dist, "test", layout=Pages(per_page=2, per_cluster=3))
    sizes = np.bincount(labels)
    assert len(pages) == -(-int((sizes > 0).sum()) // 2)
    seen = []
    browser.get(pages[0].resolve().as_uri())
    for p in range(len(pages)):
        info = open_page(browser, pages[p], tmp_path / f"page{p}.png")
        assert info["broken"] == [] and info["errors"] == [] and info["external"] == []
        clusters = browser.execute_script(
            "return [...document.querySelectorAll('.cluster')].map(d => [d.id, "
            "[...d.querySelectorAll('figcaption')].map(f => f.textContent)])")
        for cid, names in clusters:
            k = int(cid.split("-")[1])
            members = np.flatnonzero(labels == k)
            central = members[np.argsort(dist[members], kind="stable")][:3]
            assert names == [str(data.files[i].relative_to(data.root)) for i in central]
            seen.append(k)
        if p + 1 < len(pages):  # the "next" link leads to the next page
            browser.find_element("link text", "next").click()
            assert browser.current_url.endswith(pages[p + 1].name)
    assert sorted(seen) == sorted(np.flatnonzero(sizes).tolist())
    assert [sizes[k] for k in seen] == sorted((sizes[k] for k in seen), reverse=True)
