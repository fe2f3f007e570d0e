"""The bad-input catalogue (docs/robustness.md): every case gives a sensible result or one clear line, and
nothing already written is lost. Cases covered elsewhere are named in the catalogue with their test."""
import dataclasses
import errno
import json
import re

import numpy as np
import pytest
from PIL import Image

from deepcluster import ConfigError, ImageFolder, train
from deepcluster.cli import main


def save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@pytest.fixture
def odd_modes(tmp_path):
    """One image per awkward kind, each 20x12 px (smaller than the 32 px input), with a known content."""
    root = tmp_path / "odd"
    grad = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (12, 1))
    save(Image.fromarray(grad), root / "grey.png")
    save(Image.fromarray((grad.astype(np.uint16) * 257)), root / "grey16.png")  # 16-bit PNG
    save(Image.fromarray(grad).convert("CMYK"), root / "cmyk.jpg", quality=95)
    rgba = np.zeros((12, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :10, 3] = 255  # left half opaque red, right half fully transparent
    save(Image.fromarray(rgba, "RGBA"), root / "rgba.png")
    save(Image.fromarray(grad).convert("P"), root / "palette.gif")
    return root


def test_every_mode_becomes_rgb_with_its_content(odd_modes):
    ds = ImageFolder(odd_modes, 32)
    got = {p.name: ds[i][0] for i, p in enumerate(ds.files)}
    assert set(got) == {"grey.png", "grey16.png", "cmyk.jpg", "rgba.png", "palette.gif"}
    for img in got.values():
        assert img.shape == (3, 32, 32) and img.dtype.is_floating_point is False
    # 16-bit grey is scaled to 8 bits, not clipped to white: it matches the 8-bit gradient
    assert np.abs(got["grey16.png"].numpy().astype(int) - got["grey.png"].numpy().astype(int)).max() <= 1
    assert got["grey.png"][:, :, 0].float().mean() < 60 < got["grey.png"][:, :, -1].float().mean()
    assert (got["grey.png"][0] == got["grey.png"][1]).all() and (got["grey.png"][1] == got["grey.png"][2]).all()
    # transparency over white: the opaque half stays red, the transparent half is white
    r = got["rgba.png"].numpy()
    assert tuple(r[:, 16, 2]) == (200, 0, 0) and tuple(r[:, 16, 29]) == (255, 255, 255)
    assert abs(int(got["cmyk.jpg"][0].float().mean()) - int(got["grey.png"][0].float().mean())) < 12


def test_grey_alpha_and_palette_pngs_keep_their_content(tmp_path):
    # grey + alpha: the opaque half keeps its grey level on all three channels, the transparent half turns white
    la = np.zeros((16, 32, 2), np.uint8)
    la[..., 0], la[:, :16, 1] = 90, 255
    save(Image.fromarray(la, "LA"), tmp_path / "d" / "la.png")
    # a palette PNG of two colours, and one whose palette marks a colour transparent
    pal = Image.fromarray(np.repeat([[0] * 16 + [1] * 16], 16, axis=0).astype(np.uint8), "P")
    pal.putpalette([10, 120, 250, 240, 30, 60] + [0] * 762)
    save(pal, tmp_path / "d" / "palette.png")
    save(pal, tmp_path / "d" / "palette-alpha.png", transparency=1)
    ds = ImageFolder(tmp_path / "d", 16)
    got = {p.name: ds[i][0].numpy() for i, p in enumerate(ds.files)}
    la_img = got["la.png"]
    assert la_img.shape == (3, 16, 16) and (la_img[:, :, :6] == 90).all() and (la_img[:, :, -6:] == 255).all()
    assert tuple(got["palette.png"][:, 8, 2]) == (10, 120, 250) and tuple(got["palette.png"][:, 8, -3]) == (240, 30, 60)
    assert tuple(got["palette-alpha.png"][:, 8, 2]) == (10, 120, 250)  # the opaque colour kept
    assert tuple(got["palette-alpha.png"][:, 8, -3]) == (255, 255, 255)  # the transparent one over white
    assert (got["palette.png"][0] != got["palette.png"][1]).any()  # colour, not grey


def test_non_square_and_tiny_images_keep_their_centre_square(tmp_path):
    # 60 x 30: red, green and blue thirds. Shorter side 30 -> 32 makes it 64 wide; the centre square is
    # columns 16-47: a little red, the green third (21-42), a little blue
    bands = np.zeros((30, 60, 3), np.uint8)
    for c in range(3):
        bands[:, 20 * c:20 * (c + 1), c] = 255
    save(Image.fromarray(bands), tmp_path / "d" / "wide.png")
    save(Image.fromarray(bands.transpose(1, 0, 2).copy()), tmp_path / "d" / "tall.png")  # 30 x 60, rows
    tiny = np.zeros((7, 5, 3), np.uint8)
    tiny[4:] = 255  # 5 x 7 px: black above, white below
    save(Image.fromarray(tiny), tmp_path / "d" / "tiny.png")
    ds = ImageFolder(tmp_path / "d", 32)
    got = {p.name: ds[i][0].numpy().astype(int) for i, p in enumerate(ds.files)}
    wide, tall = got["wide.png"], got["tall.png"]
    assert wide.shape == tall.shape == (3, 32, 32)
    assert tuple(wide[:, 16, 0]) == (255, 0, 0) and tuple(wide[:, 16, 16]) == (0, 255, 0)
    assert tuple(wide[:, 16, 31]) == (0, 0, 255) and (wide[1, :, 8:24] == 255).all()  # whole height, centre band
    assert np.array_equal(tall, wide.transpose(0, 2, 1))  # the same for a tall image, along its height
    t = got["tiny.png"]
    # 5 x 7 -> 32 x 45, its centre 32 rows kept: rows 6-37 of it, black down to 28.8 (crop row 22.8)
    assert t.shape == (3, 32, 32) and t[:, :14].max() == 0 and t[:, -5:].min() == 255  # bilinear blurs the edge


def test_a_non_empty_folder_without_a_run_is_refused_unless_overwrite(tiny_config, tmp_path):
    out = tmp_path / "mine"
    save(Image.new("RGB", (8, 8)), out / "holiday.png")
    (out / "notes.txt").write_text("the user's own")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match=r"is not empty and holds no deepcluster run: choose an empty or new --out"):
        train(dataclasses.replace(tiny_config, epochs=1), out, quiet=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    train(dataclasses.replace(tiny_config, epochs=1), out, overwrite=True, quiet=True)  # writes beside them
    assert (out / "checkpoint.pt").is_file() and all((out / n).read_bytes() == b for n, b in before.items())


def test_every_test_the_catalogue_names_exists():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = [line for line in (root / "docs" / "robustness.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 34
    named = 0
    for row in rows:
        for path, name in re.findall(r"`([\w/]+\.py)::(\w+)`", row):
            source = root / "tests" / path
            assert source.is_file() and re.search(rf"^def {name}\(", source.read_text(), re.M), (path, name)
            named += 1
        assert "`" in row.split("|")[-2] or row.split("|")[-2].strip() == "same", row  # every row names its test
    assert named >= 20


def test_broken_files_are_skipped_with_one_warning_or_refused_with_strict(image_folder, tmp_path):
    good = next(image_folder.rglob("*.png"))
    (image_folder / "disk" / "empty.png").write_bytes(b"")
    (image_folder / "disk" / "text.jpg").write_text("not an image at all")
    data = good.read_bytes()
    (image_folder / "disk" / "cut.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    jpg = save(Image.open(good).convert("RGB"), tmp_path / "x.jpg")
    (image_folder / "hstripe" / "cut.jpg").write_bytes(jpg.read_bytes()[:-200])  # truncated JPEG
    (image_folder / "notes.txt").write_text("text files are not image files: not even counted")
    with pytest.warns(UserWarning, match=r"skipped 4 unreadable image file\(s\)") as rec:
        ds = ImageFolder(image_folder, 32)
    assert len(rec) == 1 and len(ds) == 36
    with pytest.raises(ConfigError, match="4 unreadable image file.*drop --strict"):
        ImageFolder(image_folder, 32, strict=True)


def test_a_file_damaged_after_the_scan_is_one_clear_line(image_folder, tmp_path, capsys):
    ds = ImageFolder(image_folder, 32)
    ds.files[3].write_bytes(b"gone bad")
    with pytest.raises(ConfigError, match=r"cannot read .*03\.png.*remove or restore it, then --resume"):
        ds[3]


def test_a_file_damaged_under_loader_workers_is_still_one_line(image_folder):
    from deepcluster.cli import one_line
    from deepcluster.data import make_loader

    ds = ImageFolder(image_folder, 32)
    ds.files[3].write_bytes(b"gone bad")
    with pytest.raises(ConfigError) as info:  # raised in a worker process, re-raised with its traceback
        list(make_loader(ds, range(len(ds)), 8, workers=1))
    assert "Original Traceback" in str(info.value)
    msg = one_line(info.value)
    assert "\n" not in msg and re.match(r"cannot read .*03\.png.*remove or restore it, then --resume$", msg), msg


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny_config, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train(dataclasses.replace(tiny_config, epochs=1), out, quiet=True)
    before = (out / "checkpoint.pt").read_bytes()
    import torch

    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    args = ["train", "--data", tiny_config.data, "--out", str(out), "--resume", "--epochs", "2", "--image-size",
            "32", "--k", "6", "--batch-size", "16", "--pca-dim", "16", "--eval-seeds", "1", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("deepcluster: error")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "No space left on device" in errors[0] and "the previous version is intact" in errors[0]
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [f for f in out.iterdir() if ".tmp" in f.name]
    monkeypatch.undo()
    assert main(args) == 0  # space back: the run resumes and finishes
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("args,message", [
    (["--k", "1"], "k = 1 is too small"),
    (["--k", "37"], "lower --k to at most 36"),
    (["--image-size", "4"], "too small: use at least 8 pixels"),
    (["--data", ""], "no data given"),
    (["--clustering", "spectral"], "unknown clustering 'spectral'"),
    (["--pic-alpha", "2"], "pic_alpha = 2.0 must lie in (0, 1)"),
])
def test_bad_settings_are_one_line(image_folder, tmp_path, capsys, args, message):
    rc = main(["train", "--data", str(image_folder), "--out", str(tmp_path / "r"), "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_tiny_images_and_a_folder_of_odd_modes_train(odd_modes, tmp_path):
    for i in range(6):  # a few more, of 5x7 px: far smaller than the crop
        save(Image.fromarray(np.full((7, 5), 40 * i, np.uint8)), odd_modes / f"tiny{i}.png")
    summary = train(dataclasses.replace(
        __import__("deepcluster").Config(), data=str(odd_modes), image_size=32, k=3, epochs=1, batch_size=4,
        reassign=1, pca_dim=4, device="cpu"), tmp_path / "run", quiet=True)
    assert summary["metrics"][0]["clusters"] == 3 and summary["eval"] == {}  # no labels: no closing k-means
