"""The cluster browser: every cluster of a run, largest first, paginated, each with its size, its label mix when
there are labels, and its most central images with their file names. Pages are self-contained HTML (images
inlined, no script) beside the report, so a 10,000-cluster run stays a few hundred light pages."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from ..export.table import image_names, ranks
from ..rundir import atomic_write_text
from .grids import to_rgb

PER_PAGE, PER_CLUSTER, CELL = 40, 8, 72


class Pages(NamedTuple):
    """The browser's pages: ``per_page`` clusters a page, ``per_cluster`` images of each, thumbnails of ``cell``
    px."""
    per_page: int = PER_PAGE
    per_cluster: int = PER_CLUSTER
    cell: int = CELL
STYLE = """
.cluster { border-top: 1px solid #ddd; padding: 0.4em 0; } .cluster h3 { margin: 0.2em 0; font-size: 1em; }
figure { display: inline-block; margin: 0 6px 6px 0; width: %dpx; vertical-align: top; }
figcaption { font-size: 11px; color: #555; overflow-wrap: anywhere; } .pages a { margin-right: 0.5em; }
"""


def page_name(p: int) -> str:
    return f"page-{p:04d}.html"


def _thumb(image, cell: int) -> str:
    im = Image.fromarray(to_rgb(image))
    im = im.resize((cell, cell), Image.NEAREST if im.width < cell else Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _pages_nav(p: int, pages: int) -> str:
    near = sorted({1, pages, *range(max(1, p - 3), min(pages, p + 3) + 1)})
    links, last = [], 0
    for q in near:
        if q > last + 1:
            links.append("...")
        links.append(f"<b>{q}</b>" if q == p else f'<a href="{page_name(q)}">{q}</a>')
        last = q
    prev = f'<a href="{page_name(p - 1)}">previous</a>' if p > 1 else ""
    nxt = f'<a href="{page_name(p + 1)}">next</a>' if p < pages else ""
    return f'<p class="pages">{prev} {" ".join(links)} {nxt} <a href="../index.html">back to the report</a></p>'


def write_cluster_browser(report_dir: str | Path, dataset, labels: np.ndarray, distances: np.ndarray,
                          title: str, style: str = "", targets: Optional[np.ndarray] = None,
                          layout: Pages = Pages()) -> list[Path]:
    """Write ``report_dir/clusters/page-NNNN.html`` (and remove pages left from an earlier, larger run). Returns
    the pages written, the first one first."""
    per_page, per_cluster, cell = layout
    out = Path(report_dir) / "clusters"
    out.mkdir(parents=True, exist_ok=True)
    names = image_names(dataset)
    classes = getattr(dataset, "classes", ()) or ()
    rank, _ = ranks(labels, distances)
    sizes = np.bincount(labels)
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    by_cluster = {c: [] for c in order}
    for i in np.argsort(rank, kind="stable"):
        if rank[i] <= per_cluster:
            by_cluster[int(labels[i])].append(int(i))
    pages = max(1, -(-len(order) // per_page))
    grouped = np.split(np.argsort(labels, kind="stable"), np.cumsum(sizes)[:-1])  # members of each cluster
    written = []
    for p in range(1, pages + 1):
        parts = []
        for c in order[(p - 1) * per_page:p * per_page]:
            members = sorted(by_cluster[c], key=lambda i: rank[i])
            mix = ""
            if targets is not None:
                counts = np.bincount(targets[grouped[c]])
                top = np.argsort(-counts)[:3]
                mix = "; labels: " + ", ".join(
                    f"{html.escape(str(classes[t]) if t < len(classes) else str(t))} {counts[t]}"
                    for t in top if counts[t])
            figs = "".join(f'<figure><img alt="{html.escape(str(names[i]))}" title="{html.escape(str(names[i]))}" '
                           f'src="data:image/png;base64,{_thumb(dataset[i][0].numpy(), cell)}">'
                           f'<figcaption>{html.escape(str(names[i]))}</figcaption></figure>' for i in members)
            parts.append(f'<div class="cluster" id="cluster-{c}"><h3>cluster {c}: {sizes[c]} images{mix}</h3>'
                         f"{figs}</div>")
        nav = _pages_nav(p, pages)
        page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}: clusters, '
                f'page {p} of {pages}</title><style>{style}{STYLE % cell}</style></head><body>'
                f"<h1>{html.escape(title)}: every cluster</h1><p class=\"note\">{len(order)} clusters, largest "
                f"first, {per_page} a page; the {per_cluster} images nearest each centroid, most central first."
                f"</p>{nav}{''.join(parts)}{nav}</body></html>\n")
        atomic_write_text(out / page_name(p), page)
        written.append(out / page_name(p))
    for stale in out.glob("page-*.html"):
        if stale not in written:
            stale.unlink()
    return written
