"""What the tests share: small generated images (three visually distinct classes: disks, horizontal and vertical
stripes), the configs that train on them in seconds, the headless browser, and the check that a resumed run ends
as an uninterrupted one."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepcluster import Config, TensorImages, train
from deepcluster.checkpoint import load_checkpoint
from deepcluster.recipe import resolve
from deepcluster.rundir import RunDir


def make_image(kind: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    if kind == 0:
        cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(4, 8)]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    else:
        period = rng.integers(4, 8)
        phase = rng.integers(0, period)
        mask = ((yy if kind == 1 else xx) + phase) % period < period // 2
    color = rng.integers(120, 256, 3)
    img = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 40, 3).astype(np.uint8)
    img[mask] = color
    return img


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/{disk,hstripe,vstripe}/*.png``: 3 classes x 12 images of 32x32 RGB, with odd sizes mixed in."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for kind, name in enumerate(("disk", "hstripe", "vstripe")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(make_image(kind, rng, 32 if i % 4 else 40)).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture
def tensor_images() -> TensorImages:
    """64 grayscale 28x28 images in memory, 2 classes."""
    rng = np.random.default_rng(1)
    imgs = np.stack([make_image(i % 2 + 1, rng, 28)[..., 0] for i in range(64)])[:, None]
    return TensorImages(torch.from_numpy(imgs), np.arange(64) % 2, ("h", "v"), name="generated")


@pytest.fixture
def tiny_config(image_folder: Path) -> Config:
    """A config that trains in a few seconds on ``image_folder``: the paper's settings where it sets none."""
    return resolve(Config(data=str(image_folder), recipe="paper", arch="small", image_size=32, k=6, epochs=2,
                          batch_size=16, pca_dim=16, eval_seeds=1, device="cpu"))


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Selenium: Debian's ``chromium`` and ``chromium-driver``, installed by
    ``make setup``. Nothing is fetched: the driver is given by path, so Selenium's own downloader stays idle."""
    import os
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chrome and driver_path, "the report tests need chromium and chromedriver: run 'make setup'"
    os.environ.setdefault("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1300,900"):
        opts.add_argument(a)
    opts.binary_location = chrome
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield driver
    driver.quit()


def open_page(browser, page: Path, screenshot: Path) -> dict:
    """Load ``page`` in the browser and report what a reader would meet: images that did not load, console
    errors, section ids, links, references to anything off this machine (``external``), and a full-page
    screenshot written to ``screenshot``."""
    browser.get_log("browser")  # drop messages of earlier pages
    browser.get(page.resolve().as_uri())
    info = browser.execute_script("""
        const imgs = [...document.images];
        return {
          images: imgs.length,
          broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
          sections: [...document.querySelectorAll('section')].map(s => s.id),
          external: [...document.querySelectorAll('[src],[href]')]
                      .map(e => e.getAttribute('src') || e.getAttribute('href'))
                      .filter(u => u.includes('://') || u.startsWith('//')),
          links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
          height: document.documentElement.scrollHeight,
          text: document.body.innerText,
        };""")
    info["errors"] = [m for m in browser.get_log("browser") if m["level"] in ("SEVERE", "ERROR")]
    browser.set_window_size(1300, min(info["height"], 12000))
    browser.save_screenshot(str(screenshot))
    browser.set_window_size(1300, 900)
    return info


TIMES = ("time_features", "time_clustering", "time_training")


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def assert_resume_is_exact(cfg, tmp_path):
    """Run ``cfg`` straight into ``a``; run one epoch into ``b`` and resume it to the end. Both must end with the
    same metrics (times aside) and the same weights; returns their checkpoints."""
    straight = train(cfg, tmp_path / "a", quiet=True)
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "b", quiet=True)
    resumed = train(cfg, tmp_path / "b", resume=True, quiet=True)
    assert strip_times(resumed["metrics"]) == strip_times(straight["metrics"])
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in "ab")
    assert a["epoch"] == b["epoch"] == cfg.epochs
    logs = [RunDir(tmp_path / d).epoch_clusters() for d in "ab"]  # the cluster log, the same epoch by epoch
    assert logs[0].keys() == logs[1].keys() and all(np.array_equal(logs[0][e], logs[1][e]) for e in logs[0])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b, straight
