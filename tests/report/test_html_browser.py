"""report.html in a real headless browser: every figure loads, every section is there, no console error.

Drives Debian's Chromium (``/usr/bin/chromium``) through its chromedriver
(``/usr/bin/chromedriver``, package ``chromium-driver``) with Selenium; the driver path is
given explicitly and ``SE_OFFLINE`` is set, so Selenium Manager never downloads anything.
The Chromium flags keep it off the network (this machine has none: without them Chromium
waits on connections). A full-page screenshot is saved under the test's tmp directory
and, when ``BENCHSUITE_SCREENSHOT_DIR`` is set, there too.

Locally the test skips when Chromium, chromedriver or Selenium are missing; under ``CI``
(any non-empty value) their absence is a failure, so CI cannot pass without looking.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchsuite.config.suite import parse_suite
from benchsuite.report.build import build_report
from benchsuite.run.suite_run import run_suite

log = logging.getLogger(__name__)

CHROMIUM = os.environ.get("BENCHSUITE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BENCHSUITE_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT_ENV = "BENCHSUITE_SCREENSHOT_DIR"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1600,1000")
# one task, two columns (one tuned with two trials), one seed: every section kind in ~5 s of runs
SUITE = {"tasks": ["digits_mlp"], "activations": ["relu"], "size": "tiny", "seeds": [0], "eval_every": 2,
         "optimizers": ["sgd", "adam"], "budget": {"steps": 6},
         "tuning": {"optimizers": ["sgd"], "trials": 2, "seed": 1}}


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where the browser check must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run; install chromium chromium-driver selenium)")
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _browser_tools() -> None:
    """Chromium, chromedriver and Selenium, checked before the report is built (skip or fail fast)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            _unavailable(f"{path} not found (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A headless Chromium driven by the system chromedriver, with the browser console log enabled."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER,
                                                               log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a tiny tuned suite (2 trials + 2 final runs), plots included."""
    results = tmp_path_factory.mktemp("browser-results")
    run_suite(parse_suite("browser", SUITE), results)
    out = results / "report"
    build_report(results, out)
    return out


def _full_page_png(driver) -> bytes:
    """The whole page, not only the viewport, through the DevTools protocol."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    return base64.b64decode(shot["data"])


def test_report_html_renders_in_chromium(browser, report_dir: Path, tmp_path: Path):
    page = report_dir / "report.html"
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    browser.get(page.as_uri())
    browser.execute_script("return document.fonts ? document.fonts.ready : null")

    assert browser.title == "benchsuite report"
    images = browser.execute_script(
        "return Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,"
        " data: i.src.startsWith('data:'), width: i.getBoundingClientRect().width}))")
    pngs = sorted(report_dir.glob("*.png"))
    assert len(images) == len(pngs) >= 3  # loss vs step, loss vs time, tuning
    for img in images:
        assert img["ok"] and img["data"], img["alt"]
        assert 0 < img["width"] <= 1600  # max-width 100%: never wider than the window

    headings = browser.execute_script(
        "return Array.from(document.querySelectorAll('main h2')).map(h => h.firstChild.textContent.trim())")
    expected = [h.strip() for h in re.findall(r"^## (.+)$", markdown, re.MULTILINE)]
    for section in ("How each column was tuned", "digits_mlp", "Against Adam (same task, activation, seed)"):
        assert section in expected
    assert any(h.startswith("Tuning") for h in expected)
    assert headings[:len(expected)] == expected
    assert headings[len(expected):] in (["Provenance"], ["Figures", "Provenance"])
    toc = browser.execute_script("return Array.from(document.querySelectorAll('nav.toc a')).map(a => a.textContent)")
    assert toc == headings

    provenance = browser.execute_script("return document.getElementById('provenance').nextElementSibling"
                                        ".textContent")
    assert "benchsuite" in provenance
    prov_table = browser.execute_script(
        "const h = document.getElementById('provenance'); let e = h.nextElementSibling;"
        "while (e && !e.querySelector('table')) e = e.nextElementSibling;"
        "return e ? e.querySelector('table').innerText : ''")
    for column in ("git commit", "benchsuite", "torch", "CUDA", "device", "host"):
        assert column in prov_table
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('thead th')).position") == "sticky"
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in resources if not r.startswith(("data:", "file:"))] == []  # nothing fetched off the page

    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []

    png = _full_page_png(browser)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "report.png").write_bytes(png)
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "report.png", target / "report.png")
        log.info("screenshot: %s", target / "report.png")
