"""The sources of ``folders.py`` that no installed package ships: emoji pictures from npm and fonts from Debian.

Emoji: the npm packages ``emoji-datasource-{apple,facebook,google,twitter}`` 16.0.0 (their ``emoji.json`` is MIT;
each vendor's pictures are under its own terms). ``npm pack`` fetches each tarball once into a cache folder
(``OUT_ROOT/.sources``); only ``emoji.json`` and the 64 px PNGs of the entries used are extracted, next to it, under
a temporary name then renamed. A cached folder or tarball is used as it is: nothing is downloaded again.

Fonts: the TrueType and OpenType files of ``FONT_PACKAGES``, installed with ``apt-get`` if one is missing, kept
when their letters are Latin letters (see ``latin_font``).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

EMOJI_VERSION = "16.0.0"
EMOJI_VENDORS = ("apple", "facebook", "google", "twitter")
EMOJI_SKIPPED = ("Component", "Flags")            # skin-tone swatches; flags are one kind of picture, not a meaning

FONT_PACKAGES = ("fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation2", "fonts-urw-base35",
                 "fonts-noto-core", "fonts-freefont-ttf", "fonts-croscore")
# families whose Latin letters are a side-set of math, symbols or another script (their letters copy a text font's)
FONT_SKIPPED = re.compile(r"Math|Symbol|Dingbat|Emoji|Nushu", re.IGNORECASE)


class Emoji(NamedTuple):
    """One emoji picture: a top-level entry of ``emoji.json`` as one vendor draws it."""
    name: str
    vendor: str
    category: str
    subcategory: str
    path: Path


# ---------------------------------------------------------------------------------------------------- emoji
def emoji_source(cache: Path, vendor: str) -> Path:
    """``cache/emoji-datasource-VENDOR-16.0.0``: its ``emoji.json`` and ``img/VENDOR/64/*.png`` of the top-level
    entries outside ``EMOJI_SKIPPED``. Extracted from the tarball in ``cache``, which ``npm pack`` fetches if it is
    not there."""
    stem = f"emoji-datasource-{vendor}-{EMOJI_VERSION}"
    out = Path(cache) / stem
    if out.is_dir():
        return out
    tgz = out.with_name(f"{stem}.tgz")
    if not tgz.is_file():
        if shutil.which("npm") is None:
            raise SystemExit(f"folders: npm not found: the emoji folders need {tgz.name} (npm pack)")
        tgz.parent.mkdir(parents=True, exist_ok=True)
        print(f"folders: npm pack emoji-datasource-{vendor}@{EMOJI_VERSION} into {tgz.parent}", file=sys.stderr)
        subprocess.run(["npm", "pack", "--silent", f"emoji-datasource-{vendor}@{EMOJI_VERSION}"], cwd=tgz.parent,
                       check=True, stdout=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.partial-", dir=out.parent))
    try:
        with tarfile.open(tgz) as tf:
            meta = tf.extractfile("package/emoji.json").read()
            wanted = {f"package/img/{vendor}/64/{e['image']}" for e in json.loads(meta)
                      if e["category"] not in EMOJI_SKIPPED and e.get(f"has_img_{vendor}")}
            (tmp / "img" / vendor / "64").mkdir(parents=True)
            for member in tf:
                if member.isfile() and member.name in wanted:
                    (tmp / member.name.removeprefix("package/")).write_bytes(tf.extractfile(member).read())
        (tmp / "emoji.json").write_bytes(meta)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@functools.lru_cache(maxsize=None)
def emoji_pictures(cache: Path) -> tuple[Emoji, ...]:
    """Every picture the emoji folders draw from, vendor by vendor in ``emoji.json`` order: top-level entries only
    (skin-tone variants are not separate pictures), none of ``EMOJI_SKIPPED``, none obsoleted by a newer entry
    (an old form of another one), and only where the vendor has the picture."""
    out = []
    for vendor in EMOJI_VENDORS:
        folder = emoji_source(cache, vendor)
        for e in json.loads((folder / "emoji.json").read_text()):
            if e["category"] in EMOJI_SKIPPED or "obsoleted_by" in e or not e.get(f"has_img_{vendor}"):
                continue
            out.append(Emoji(e["short_name"], vendor, e["category"], e["subcategory"],
                             folder / "img" / vendor / "64" / e["image"]))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------- fonts
def _installed(package: str) -> bool:
    run = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return run.returncode == 0 and run.stdout.endswith("install ok installed")


def ensure_font_packages(packages: tuple[str, ...] = FONT_PACKAGES) -> dict[str, str]:
    """Install those of ``packages`` that are missing with ``apt-get`` (as root); returns their versions."""
    if shutil.which("dpkg-query") is None:
        raise SystemExit(f"folders: no dpkg-query: the glyph folders need Debian's {' '.join(packages)}")
    missing = [p for p in packages if not _installed(p)]
    if missing:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise SystemExit(f"folders: apt-get not usable here (not root or absent): install {' '.join(missing)}")
        print(f"folders: apt-get install {' '.join(missing)}", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for first in ([], ["update"]):                             # the package lists may be empty: update once
            if first:
                subprocess.run(["apt-get", "-q", *first], env=env, capture_output=True)
            run = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True,
                                 text=True)
            if run.returncode == 0:
                break
        else:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"folders: apt-get install {' '.join(missing)} failed: {last}")
    return {p: subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True,
                              text=True).stdout for p in packages}


def latin_font(path: Path) -> bool:
    """Whether a font file draws the 52 letters A-Z, a-z as Latin letters: its Unicode cmap has them all, each
    mapped to the glyph named after it (a symbol font maps ``a`` to ``alpha``, a dingbat font to ``a60``), and its
    family is none of ``FONT_SKIPPED``."""
    from fontTools.ttLib import TTFont

    if FONT_SKIPPED.search(path.name):
        return False
    with TTFont(path, lazy=True) as font:
        cmap = font.getBestCmap() or {}
    return all(cmap.get(ord(c)) in (c, f"uni{ord(c):04X}") for c in string.ascii_letters)


@functools.lru_cache(maxsize=None)
def latin_fonts() -> tuple[tuple[Path, ...], dict[str, str]]:
    """The Latin text fonts of ``FONT_PACKAGES`` (installed if missing), sorted by path, and the packages'
    versions."""
    versions = ensure_font_packages()
    files = set()
    for package in FONT_PACKAGES:
        listed = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
        files |= {Path(f) for f in listed.splitlines() if f.endswith((".ttf", ".otf")) and Path(f).is_file()}
    return tuple(sorted(f for f in files if latin_font(f))), versions
