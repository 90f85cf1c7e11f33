"""report.html: one self-contained page (embedded figures, no external URL, provenance, missing figures noted)."""

from __future__ import annotations

import base64
import logging
import re

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.report.build import build_report
from benchsuite.report.html import markdown_to_html, provenance_markdown, write_html_report
from benchsuite.run.executor import run_local

# the smallest valid PNG (1x1, transparent)
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'

MD = """# benchsuite report

12 runs; tasks: digits_mlp.

## digits_mlp

| optimizer | final train loss | runs ok |
|---|---|---|
| adam | 0.123 ± 0.01 | 2/2 |
| sgd | 1.5 | 2/2 |

![Loss against step](loss_vs_step.png)

## Curvature

![Lost figure](gone.png)

Inline ![icon](icon.svg) in text.
"""


def _external_urls(doc: str) -> list[str]:
    """Every ``src``/``href``/``url()`` that would make the browser fetch something off the machine."""
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)[^"'\s>]*|url\(\s*["']?(?:https?:|//)""", doc)


def test_markdown_to_html_embeds_notes_missing_and_has_sections(tmp_path, caplog):
    (tmp_path / "loss_vs_step.png").write_bytes(PNG)
    (tmp_path / "icon.svg").write_bytes(SVG)
    (tmp_path / "extra_plot.png").write_bytes(PNG)
    (tmp_path / "extra_plot.svg").write_bytes(SVG)
    figures = [tmp_path / name for name in ("loss_vs_step.png", "loss_vs_step.svg", "extra_plot.svg",
                                            "extra_plot.png", "comparison.csv")]
    with caplog.at_level(logging.WARNING, logger="benchsuite.report.html"):
        doc, missing = markdown_to_html(MD, tmp_path, records=[], figures=figures)
    assert missing == ["gone.png"]
    assert any("gone.png" in r.getMessage() for r in caplog.records)
    assert "Figure not available: Lost figure" in doc and 'class="banner"' in doc
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]*)"', doc)
    # referenced PNG, inline SVG, and the unreferenced figure appended once (as PNG, not also as SVG)
    assert len(srcs) == 3 and srcs[2].startswith("data:image/png")
    assert all(s.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == PNG
    assert not _external_urls(doc)
    assert "<figcaption>Loss against step</figcaption>" in doc and "<figcaption>Extra plot</figcaption>" in doc
    headings = re.findall(r"<h2[^>]*>(.*?)(?:<a class=\"headerlink\".*?)?</h2>", doc)
    assert headings == ["digits_mlp", "Curvature", "Figures", "Provenance"]
    toc = re.search(r'<nav class="toc".*?</nav>', doc, re.DOTALL).group(0)
    assert all(f'>{h}</a>' in toc for h in headings)
    assert "<title>benchsuite report</title>" in doc and "<h1>benchsuite report</h1>" in doc
    assert '<td class="num">0.123 ± 0.01</td>' in doc and "<td>2/2</td>" in doc
    assert doc.count("<thead>") == 1 and 'class="table-wrap"' in doc


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """Two real 3-step runs (sgd, adam) of tiny digits_mlp."""
    store = ResultStore(tmp_path_factory.mktemp("html-results"))
    specs = [RunSpec(task="digits_mlp", activation="relu", optimizer=name, size="tiny", budget=Budget(steps=3),
                     eval_every=1) for name in ("sgd", "adam")]
    assert run_local(specs, store).statuses["completed"] == 2
    return store


def test_provenance_lists_each_setup_once_with_its_run_count(tiny_results):
    records, _ = tiny_results.records()
    text = provenance_markdown(records)
    prov = records[0].provenance
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    assert prov["git_commit"][:12] in row and prov["versions"]["torch"] in row and prov["host"] in row
    assert f"| {prov['versions']['benchsuite']} |" in row and "| cpu |" in row
    assert "different set-ups" not in text
    other = RunRecord.from_json(records[1].to_json())
    other.provenance = {**other.provenance, "host": "elsewhere", "device": "cuda:0", "gpu": "H200"}
    text = provenance_markdown([records[0], other])
    assert "**2 different set-ups**" in text and "| cuda:0 | H200 | elsewhere |" in text
    assert "No run records" in provenance_markdown([])


def test_build_report_writes_a_self_contained_report_html(tiny_results, tmp_path):
    report = build_report(tiny_results.root, tmp_path / "out")
    page = tmp_path / "out" / "report.html"
    assert page in report.files
    doc = page.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs and doc.count('src="data:image/png;base64,') == len(pngs)
    assert "Figure not available" not in doc and not _external_urls(doc)
    for heading in ("How each column was tuned", "digits_mlp", "Provenance"):
        assert re.search(rf"<h2[^>]*>{re.escape(heading)}", doc), heading


def test_write_html_report_survives_a_missing_figure(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        path = write_html_report("# r\n\n## A\n\n![Gone](nope.png)\n\n![Remote](https://example.com/x.png)\n", tmp_path)
    doc = path.read_text(encoding="utf-8")
    assert doc.count('class="missing-figure"') == 2 and "2 figure(s) could not be embedded" in doc
    assert "https://example.com" not in re.sub(r'<span class="missing-figure".*?</span>|<p class="banner".*?</p>', "",
                                               doc, flags=re.DOTALL)
    assert not _external_urls(doc)
    assert len([r for r in caplog.records if "not embedded" in r.getMessage()]) == 2


@pytest.mark.parametrize("md", ["", "no heading at all\n", "# Only a title\n"])
def test_degenerate_markdown_still_makes_a_page(tmp_path, md):
    doc, missing = markdown_to_html(md, tmp_path)
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>") and missing == []
