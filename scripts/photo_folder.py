"""A labelled folder of real colour photographs and textures, assembled offline from images that installed
packages ship (scikit-image, scikit-learn): the second kind of data the auto recipe is measured on,
next to Fashion-MNIST.

Each class is one source picture (a portrait, a cat, a cup of coffee, a rocket, a motorbike, a deep-sky field,
a stained tissue slide, a Chinese temple, a flower, a gravel texture). Every image is a crop of its class's picture,
at a random place and scale, resized to a random size of 40-160 px (some not square), and saved as JPEG or PNG; a
share is converted to grey or given an alpha channel, so the folder mixes the formats and modes a user's folder
has. Labels are the subfolder names, used by the closing evaluation only.

    .venv/bin/python scripts/photo_folder.py OUT [--per-class 80] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def source_pictures() -> dict[str, np.ndarray]:
    """The ten source pictures, ``uint8 (H, W, 3)``, read from the files the packages install (no download)."""
    import skimage
    import sklearn.datasets
    from PIL import Image

    sk = Path(skimage.__file__).parent / "data"
    sl = Path(sklearn.datasets.__file__).parent / "images"
    files = {"astronaut": sk / "astronaut.png", "cat": sk / "chelsea.png", "coffee": sk / "coffee.png",
             "rocket": sk / "rocket.jpg", "motorbike": sk / "motorcycle_left.png",
             "deep-field": sk / "hubble_deep_field.jpg", "tissue": sk / "ihc.png", "temple": sl / "china.jpg",
             "flower": sl / "flower.jpg", "gravel": sk / "gravel.png"}
    out = {}
    for name, path in files.items():
        with Image.open(path) as im:
            out[name] = np.asarray(im.convert("RGB"))
    return out


def make_photo_folder(root: str | Path, per_class: int = 80, seed: int = 0) -> Path:
    """Write ``per_class`` crops of each source picture to ``root/CLASS/NNNN.{jpg,png}``; returns ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name, pic in source_pictures().items():
        (root / name).mkdir(parents=True, exist_ok=True)
        h, w = pic.shape[:2]
        for i in range(per_class):
            side = rng.uniform(0.2, 0.6) * min(h, w)                  # crop side: 20-60 % of the shorter side
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = min(w, int(side * aspect)), min(h, int(side / aspect))
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            out = rng.integers(40, 161)                                 # longer side of the saved image
            scale = out / max(cw, ch)
            im = Image.fromarray(pic[y0:y0 + ch, x0:x0 + cw]).resize(
                (max(8, round(cw * scale)), max(8, round(ch * scale))), Image.BICUBIC)
            mode = rng.choice(["RGB", "L", "RGBA"], p=[0.8, 0.1, 0.1])
            if mode == "L":
                im = im.convert("L")
            elif mode == "RGBA":
                im = im.convert("RGBA")
                im.putalpha(int(rng.integers(200, 256)))
            if mode != "RGBA" and rng.random() < 0.6:
                im.save(root / name / f"{i:04d}.jpg", quality=int(rng.integers(70, 96)))
            else:
                im.save(root / name / f"{i:04d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if Path(a.out).exists() and any(Path(a.out).iterdir()):
        raise SystemExit(f"photo_folder: {a.out} is not empty: give a new folder")
    root = make_photo_folder(a.out, a.per_class, a.seed)
    print(f"{sum(1 for p in root.rglob('*') if p.is_file())} images in {root}")


if __name__ == "__main__":
    main()
