"""``report.html``: the markdown report as one self-contained page, readable offline.

:mod:`benchsuite.report.build` assembles ``report.md`` (``## `` sections, markdown
tables, figures referenced as ``![caption](file.png)``); this module only converts
it. Python-Markdown (``tables`` and ``toc`` extensions) turns the markdown into
HTML, and a tree processor then

* embeds every referenced image as a base64 ``data:`` URI (PNG, JPEG, GIF, SVG), so the
  page carries its figures with it;
* replaces an image that is missing (or not a local file) with a visible note and
  logs a warning: a report with a lost figure is still a report;
* wraps each table in a scrolling box (sticky header row) and right-aligns numeric cells.

Figures written next to the report but not referenced by the markdown are appended
in a *Figures* section, and a *Provenance* section lists what produced the records
(git commit, benchsuite, torch and CUDA versions, device and GPU, host), one row per
distinct combination with its number of runs. The page has an inline style sheet, a
table of contents and no external URL of any kind (no CDN, no web fonts, no remote
images), so it reads the same from a laptop on a train as from the results server.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import re
import xml.etree.ElementTree as etree
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

import benchsuite
from benchsuite.records.record import RunRecord

__all__ = ["IMAGE_TYPES", "markdown_to_html", "provenance_markdown", "write_html_report"]
log = logging.getLogger(__name__)

#: File suffix -> MIME type of the images that are embedded.
IMAGE_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

FIGURES_HEADING = "Figures"
PROVENANCE_HEADING = "Provenance"

_NUM = r"[-+−]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_NUMBER = re.compile(rf"^(?:{_NUM}(?:\s*±\s*{_NUM})?(?:\s*\[\s*{_NUM}\s*,\s*{_NUM}\s*\])?(?:\s*(?:%|s|ms|×|x))?"
                     r"|[-+]?inf)$", re.IGNORECASE)
_WRAP_CHARS = 48  # a table cell longer than this may wrap
_TALL_ROWS = 30  # a table longer than this scrolls in its own box, header row sticky
_PLACEHOLDER = re.compile(r"^(?:[-–—]|nan|n/a)?$", re.IGNORECASE)  # empty cells: neither numeric nor text


class _EmbedProcessor(Treeprocessor):
    """Embeds images, notes missing ones, wraps tables; records what it did."""

    def __init__(self, md: markdown.Markdown, base_dir: Path) -> None:
        super().__init__(md)
        self.base_dir = base_dir
        self.embedded: list[str] = []
        self.missing: list[str] = []

    def run(self, root: etree.Element) -> None:
        for parent in list(root.iter()):
            for index, child in enumerate(list(parent)):
                if child.tag == "table":
                    parent[index] = self._wrap_table(child)
                elif child.tag == "p" and self._only_images(child):
                    parent[index] = self._figure(child)
        for parent in list(root.iter()):  # images inside running text (not a figure of their own)
            for index, child in enumerate(list(parent)):
                if child.tag == "img":
                    replacement = self._embed(child)
                    if replacement is not child:
                        replacement.tail = child.tail
                        parent[index] = replacement

    @staticmethod
    def _only_images(p: etree.Element) -> bool:
        return (len(p) > 0 and all(c.tag == "img" and not (c.tail or "").strip() for c in p)
                and not (p.text or "").strip())

    def _figure(self, p: etree.Element) -> etree.Element:
        figure = etree.Element("figure")
        for img in list(p):
            node = self._embed(img)
            node.tail = None
            figure.append(node)
        caption = "; ".join(img.get("alt", "") for img in p if img.get("alt"))
        if caption:
            etree.SubElement(figure, "figcaption").text = caption
        return figure

    def _embed(self, img: etree.Element) -> etree.Element:
        """``img`` with its ``src`` as a data URI, or a note saying why it could not be embedded."""
        src = img.get("src", "")
        if src.startswith("data:"):
            return img
        parsed = urlparse(src)
        if parsed.scheme not in ("", "file"):
            return self._note(img, src, "remote images are not embedded (the report must read offline)")
        path = Path(unquote(parsed.path))
        path = path if path.is_absolute() else self.base_dir / path
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None:
            return self._note(img, src, f"unsupported image type {path.suffix or '(none)'}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            return self._note(img, src, f"file not found ({exc.strerror or exc})")
        img.set("src", f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")
        img.set("loading", "eager")
        self.embedded.append(src)
        return img

    def _note(self, img: etree.Element, src: str, why: str) -> etree.Element:
        log.warning("report.html: image %r (%s) not embedded: %s", src, img.get("alt", ""), why)
        self.missing.append(src)
        note = etree.Element("span", {"class": "missing-figure", "role": "note"})
        note.text = f"Figure not available: {img.get('alt') or src} — {src}: {why}."
        return note

    @staticmethod
    def _wrap_table(table: etree.Element) -> etree.Element:
        """The table in a scrolling box; a column whose every filled cell is a number is right-aligned."""
        rows = [list(tr) for tr in table.iter("tr")]
        for col in range(max((len(r) for r in rows), default=0)):
            cells = [r[col] for r in rows if len(r) > col and r[col].tag == "td"]
            texts = ["".join(c.itertext()).strip() for c in cells]
            filled = [t for t in texts if not _PLACEHOLDER.match(t)]
            if filled and all(_NUMBER.match(t) for t in filled):
                for row in rows:
                    if len(row) > col:
                        row[col].set("class", (row[col].get("class", "") + " num").strip())
        for row in rows:  # long prose in a cell wraps; numbers and short labels stay on one line
            for cell in row:
                if cell.tag == "td" and len("".join(cell.itertext())) > _WRAP_CHARS:
                    cell.set("class", (cell.get("class", "") + " wrap").strip())
        tall = sum(1 for r in rows if r and r[0].tag == "td") > _TALL_ROWS
        wrapper = etree.Element("div", {"class": "table-wrap tall" if tall else "table-wrap"})
        wrapper.append(table)
        return wrapper


class _EmbedExtension(Extension):
    def __init__(self, base_dir: Path) -> None:
        super().__init__()
        self.base_dir = base_dir
        self.processor: _EmbedProcessor | None = None

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        self.processor = _EmbedProcessor(md, self.base_dir)
        md.treeprocessors.register(self.processor, "benchsuite_embed", 15)  # after inline (20), before toc (5)


def _cell(value: Any) -> str:
    """A markdown table cell: ``—`` for nothing, pipes escaped, one line."""
    if value is None or value == "":
        return "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def provenance_markdown(records: Iterable[RunRecord]) -> str:
    """A ``## Provenance`` section: one row per distinct commit / versions / device / host, with its run count.

    Args:
        records: The records the report shows (final runs and tuning trials).

    Returns:
        Markdown: the heading, a sentence and a table (or a sentence when there are no records).
    """
    rows: Counter[tuple[str, ...]] = Counter()
    for record in records:
        p: Mapping[str, Any] = record.provenance or {}
        versions = p.get("versions") or {}
        commit = str(p.get("git_commit") or "unknown")
        commit = commit[:12] + (" (dirty)" if p.get("git_dirty") else "")
        rows[(
            commit,
            _cell(versions.get("benchsuite")),
            _cell(versions.get("torch")),
            _cell(p.get("cuda")),
            _cell(p.get("device")),
            _cell(p.get("gpu")),
            _cell(p.get("host")),
            _cell(p.get("python")),
            _cell(p.get("platform")),
        )] += 1
    lines = ["", f"## {PROVENANCE_HEADING}", ""]
    built = (f"Report built {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} with benchsuite "
             f"{benchsuite.__version__}.")
    if not rows:
        return "\n".join([*lines, built, "No run records: nothing to attribute."]) + "\n"
    lines += [(built + " The runs were produced by (commit of the benchsuite checkout, *dirty* when it "
               "had uncommitted changes; versions and machine as recorded by each run):"), "",
              "| runs | git commit | benchsuite | torch | CUDA | device | GPU | host | Python | platform |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, n in sorted(rows.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append("| " + " | ".join([str(n), *key]) + " |")
    if len(rows) > 1:
        lines += ["", (f"**{len(rows)} different set-ups** produced these runs: compare times across them "
                       "with care.")]
    return "\n".join(lines) + "\n"


def _figures_markdown(md_text: str, figures: Sequence[Path], base_dir: Path) -> str:
    """A ``## Figures`` section for the image files that the markdown does not reference.

    A figure written in several formats (``loss.png`` and ``loss.svg``) is one figure: it is shown
    once, as PNG where there is one, and not at all when the markdown references any of its formats.
    """
    referenced = {Path(unquote(m)).with_suffix("").as_posix()
                  for m in re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)", md_text)}
    by_stem: dict[str, list[Path]] = {}
    for fig in map(Path, figures):
        if fig.suffix.lower() not in IMAGE_TYPES:
            continue
        rel = fig.relative_to(base_dir) if fig.is_absolute() and fig.is_relative_to(base_dir) else fig
        stem = rel.with_suffix("").as_posix()
        if stem not in referenced and Path(stem).name not in referenced:
            by_stem.setdefault(stem, []).append(rel)
    if not by_stem:
        return ""
    order = list(IMAGE_TYPES)  # png first
    items = [min(paths, key=lambda p: order.index(p.suffix.lower())) for paths in by_stem.values()]
    return "\n".join(["", f"## {FIGURES_HEADING}", "", *[f"![{_caption(p)}]({p.as_posix()})\n" for p in items]])


def _caption(path: Path) -> str:
    """``loss_vs_step.png`` -> ``Loss vs step``."""
    words = path.stem.replace("_", " ").replace("-", " ").strip()
    return (words[:1].upper() + words[1:]) or path.name


def markdown_to_html(md_text: str, base_dir: str | Path, *, title: str | None = None,
                     figures: Sequence[Path] = (), records: Iterable[RunRecord] | None = None) -> tuple[str, list[str]]:
    """Convert a markdown report into one self-contained HTML page.

    Args:
        md_text: The report's markdown (``# `` title, ``## `` sections, tables, ``![caption](file)`` figures).
        base_dir: The directory that image paths in ``md_text`` are relative to.
        title: The page title (default: the markdown's first ``# `` heading, else ``benchsuite report``).
        figures: Image files to show too; those the markdown already references are not repeated.
        records: The records behind the report, for the Provenance section (``None``: no section).

    Returns:
        The HTML document and the image sources that could not be embedded (each also logged
        as a warning and noted visibly on the page).
    """
    base_dir = Path(base_dir)
    body_md = md_text
    m = re.match(r"\s*#\s+(.+?)\s*#*\s*\n", md_text)
    page_title = title or (m.group(1) if m else "benchsuite report")
    if m:  # the title goes into the page header, not the body
        body_md = md_text[m.end():]
    body_md += _figures_markdown(md_text, figures, base_dir)
    if records is not None:
        body_md += provenance_markdown(records)
    embed = _EmbedExtension(base_dir)
    converter = markdown.Markdown(
        extensions=["tables", "toc", "sane_lists", embed],
        extension_configs={"toc": {"toc_depth": "2-2", "permalink": "#", "permalink_title": "Link to this section"}},
        output_format="html",
    )
    body = converter.convert(body_md)
    toc = "\n".join(f'<li><a href="#{html.escape(t["id"])}">{t["name"]}</a></li>'
                    for t in converter.toc_tokens)  # type: ignore[attr-defined]
    missing = list(embed.processor.missing) if embed.processor else []
    warning = ""
    if missing:
        warning = (f'<p class="banner" role="alert">{len(missing)} figure(s) could not be embedded: '
                   f'{html.escape(", ".join(missing))}. See the notes where they belong.</p>')
    doc = _TEMPLATE.format(title=html.escape(page_title), css=_CSS, toc=toc, body=body, warning=warning,
                           version=html.escape(benchsuite.__version__))
    return doc, missing


def write_html_report(md_text: str, out: str | Path, *, records: Iterable[RunRecord] | None = None,
                      figures: Sequence[Path] = (), name: str = "report.html") -> Path:
    """Write ``<out>/report.html`` from the report's markdown and the files in ``out``.

    Image references in ``md_text`` are resolved relative to ``out`` and embedded; a missing one is
    logged and noted on the page, never an error.

    Args:
        md_text: The markdown of ``report.md``.
        out: The report directory (where the images are, and where the page is written).
        records: The records behind the report, for the Provenance section.
        figures: Image files written for the report; those not referenced by ``md_text`` are appended.
        name: The file name of the page.

    Returns:
        The path of the page written.
    """
    out = Path(out)
    doc, _ = markdown_to_html(md_text, out, figures=figures, records=records)
    path = out / name
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    log.info("wrote %s (%d KiB)", path, path.stat().st_size // 1024)
    return path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="benchsuite {version}">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header class="masthead"><div class="inner"><p class="kicker">benchsuite {version}</p><h1>{title}</h1></div></header>
<div class="layout">
<nav class="toc" aria-label="Contents"><p class="toc-title">Contents</p><ol>
{toc}
</ol></nav>
<main>
{warning}
{body}
</main>
</div>
</body>
</html>
"""

_CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#0b5cad; --head:#eef2f6; }
* { box-sizing:border-box; }
html { scroll-behavior:smooth; }
body { margin:0; color:var(--ink); background:#fff;
  font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
.masthead { background:#12263f; color:#fff; border-bottom:4px solid var(--accent); }
.masthead .inner { max-width:1760px; margin:0 auto; padding:22px 32px 18px; }
.masthead h1 { margin:0; font-size:28px; font-weight:600; letter-spacing:.2px; }
.kicker { margin:0 0 4px; font-size:12px; text-transform:uppercase; letter-spacing:1.2px; color:#9fb9d6; }
.layout { display:flex; gap:36px; max-width:1760px; margin:0 auto; padding:24px 32px 64px; align-items:flex-start; }
.toc { flex:0 0 230px; position:sticky; top:16px; max-height:calc(100vh - 32px); overflow:auto;
  font-size:13.5px; border-right:1px solid var(--line); padding-right:16px; }
.toc-title { margin:0 0 8px; font-weight:600; text-transform:uppercase; font-size:12px; letter-spacing:1px;
  color:var(--muted); }
.toc ol { margin:0; padding-left:20px; }
.toc li { margin:3px 0; }
.toc a { color:var(--ink); text-decoration:none; }
.toc a:hover { color:var(--accent); text-decoration:underline; }
main { flex:1 1 auto; min-width:0; }
main > p:first-child { margin-top:0; }
main > p, main > ul, main > ol { max-width:72rem; }  /* prose at a readable line length; tables may be wider */
h2 { font-size:21px; font-weight:600; margin:40px 0 12px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:16.5px; font-weight:600; margin:28px 0 10px; }
.headerlink { margin-left:8px; color:#9aa6b2; text-decoration:none; font-weight:400; visibility:hidden; }
h2:hover .headerlink, h3:hover .headerlink { visibility:visible; }
a { color:var(--accent); }
code { font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:var(--soft);
  padding:1px 5px; border-radius:4px; }
ul { padding-left:22px; }
li { margin:3px 0; }
.table-wrap { overflow:auto; width:fit-content; max-width:100%; margin:14px 0 18px; border:1px solid var(--line);
  border-radius:6px; }
.table-wrap.tall { max-height:max(75vh, 480px); }
table { border-collapse:separate; border-spacing:0; font-size:12.5px; font-variant-numeric:tabular-nums; }
thead th { position:sticky; top:0; z-index:1; background:var(--head); text-align:left; font-weight:600;
  border-bottom:1px solid var(--line); }
th, td { padding:5px 9px; border-bottom:1px solid #eaeef2; vertical-align:top; white-space:nowrap; }
td.wrap { white-space:normal; min-width:18em; }
.num { text-align:right; white-space:nowrap; }
thead th.num { text-align:right; }
tbody tr:nth-child(even) td { background:#fbfcfd; }
tbody tr:hover td { background:#eef5fd; }
tbody tr:last-child td { border-bottom:0; }
figure { margin:20px 0 28px; padding:12px; border:1px solid var(--line); border-radius:6px; background:#fff; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { margin-top:8px; font-size:13px; color:var(--muted); text-align:center; }
.missing-figure { display:block; padding:10px 14px; border:1px dashed #c0392b; border-radius:6px;
  color:#8e2a1f; background:#fdf1ef; font-size:13.5px; }
.banner { padding:10px 14px; border-left:4px solid #c0392b; background:#fdf1ef; color:#8e2a1f; }
@media (max-width: 900px) { .layout { display:block; padding:16px; } .toc { position:static; border:0;
  max-height:none; margin-bottom:16px; } }
@media print { .toc { display:none; } .table-wrap, .table-wrap.tall { max-height:none; overflow:visible; }
  .masthead { background:none; color:var(--ink); } thead th { position:static; } figure { break-inside:avoid; } }
"""
