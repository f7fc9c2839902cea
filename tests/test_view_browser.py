"""``crcrs view`` in a real browser: Debian's chromium driven by Playwright (headless).

Skipped, with the reason, where /usr/bin/chromium or the ``playwright`` package is missing
(``make test`` installs chromium where it can). Screenshots go to ``tmp_path``, and are copied to
``$CRCRS_TEST_ARTIFACTS/view/`` when that variable names a folder.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
HOSTILE_ID = "P001<b>bold</b>"  # a patient id that is HTML: it must show as text

if not CHROMIUM.is_file():
    pytest.skip(
        "no /usr/bin/chromium (apt-get install chromium; make test does it as root)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright missing")


def _keep(path: Path) -> None:
    """Copy a screenshot to $CRCRS_TEST_ARTIFACTS/view/ when that variable is set."""
    folder = os.environ.get("CRCRS_TEST_ARTIFACTS")
    if folder:
        (Path(folder) / "view").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / "view" / path.name)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(view_cohort, tmp_path_factory):
    """The viewer on a free loopback port; P001's id is HTML, P006's slide is not a slide."""
    from werkzeug.serving import make_server

    from feature_extraction.view.app import create_app, quiet
    from feature_extraction.view.catalog import open_scores, slides_in
    from feature_extraction.view.phenotypes import read_phenotypes
    from feature_extraction.view.site import Site

    c = view_cohort
    root = tmp_path_factory.mktemp("browser")
    slides = root / "slides"
    shutil.copytree(c.slides, slides)
    (slides / "P006-S1.tiff").write_bytes(b"II*\x00 truncated, not a slide")
    table = c.clinical.read_text().replace("P001,", f"{HOSTILE_ID},", 1)
    (root / "clinical.csv").write_text(table)
    source = open_scores(c.model, None, c.features, root / "clinical.csv")
    site = Site(source, slides_in([slides]), phenotypes=read_phenotypes(c.phenotypes))
    httpd = make_server("127.0.0.1", 0, create_app(site), threaded=True, request_handler=quiet())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/", site
    httpd.shutdown()


class Page:
    """A page with its console errors and deep-zoom responses recorded."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 800})
        self.errors: list[str] = []
        self.tiles: list = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: "/dzi/" in r.url and self.tiles.append(r))
        self.page.goto(url)

    def ready(self, key: str, kind: str = "attention") -> None:
        # a selector, not wait_for_function: the page's CSP forbids eval (and should)
        self.page.wait_for_selector(f'body[data-ready="{key}:{kind}"]', timeout=15_000)
        self.page.wait_for_timeout(300)  # the last repaint

    def viewer_pixels(self, path: Path) -> np.ndarray:
        from PIL import Image

        self.page.locator("#viewer").screenshot(path=str(path))
        _keep(path)
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)

    def click_level0(self, key: str, x: float, y: float) -> None:
        """Click the viewer at level-0 pixel (x, y) of slide ``key``."""
        point = self.page.evaluate(
            """([x, y, w]) => {
                const v = window.crcrsView.viewer;
                const p = v.viewport.pixelFromPoint(new OpenSeadragon.Point(x / w, y / w), true);
                const box = document.getElementById('viewer').getBoundingClientRect();
                return [box.left + p.x, box.top + p.y];
            }""",
            [float(x), float(y), self.page.evaluate(f"window.CRCRS_VIEW.slides['{key}'].width")],
        )
        self.page.mouse.click(*point)

    def shown(self, name: str) -> float:
        cell = self.page.locator(f'#tile-info td[data-name="{name}"]')
        return float(cell.get_attribute("data-value"))


def _planted_tile(view_cohort, site, slide_id: str):
    """The expected scores of the slide's first planted tile, from tile_scores directly."""
    from mil_crcrs.data.inputs import open_inputs
    from mil_crcrs.ensemble import CRCRSModel
    from mil_crcrs.explain.scores import tile_scores

    c = view_cohort
    model = CRCRSModel.load(c.model)
    inputs = open_inputs(c.features, c.clinical, time_unit=model.time_unit)
    patient = slide_id.split("-")[0]
    scores = tile_scores(model, inputs.bags[inputs.cohort.patient_ids.index(patient)])
    x, y = c.planted[slide_id][0]
    i = int(np.flatnonzero((scores.coords[:, 0] == x) & (scores.coords[:, 1] == y))[0])
    return x, y, scores.attention[i], scores.contribution[i]


def test_page_tiles_overlay_and_a_planted_tiles_score(browser, served, view_cohort, tmp_path):
    url, site = served
    page = Page(browser, url)
    page.ready("s0")
    # the deep-zoom tiles arrived, and they are pictures of tissue, not blank
    assert page.tiles and all(r.status == 200 for r in page.tiles)
    from PIL import Image

    deepest = max(page.tiles, key=lambda r: int(r.url.split("/")[-2]))
    tile = np.asarray(Image.open(io.BytesIO(deepest.body())).convert("RGB"), dtype=float)
    assert tile.std() > 10
    # the hostile patient id is text, not markup
    assert page.page.locator("#patients b").count() == 0
    assert HOSTILE_ID in page.page.locator("#patients").inner_text()
    # the overlay toggles and changes the pixels
    with_overlay = page.viewer_pixels(tmp_path / "view_attention.png")
    page.page.select_option("#kind", "none")
    page.ready("s0", "none")
    without = page.viewer_pixels(tmp_path / "view_no_overlay.png")
    assert np.abs(with_overlay - without).max(axis=2).__gt__(40).mean() > 0.05
    page.page.select_option("#kind", "contribution")
    page.ready("s0", "contribution")
    assert "reference" in page.page.locator("#legend").inner_text()
    # a click on a planted tile shows that tile's scores
    x, y, attention, contribution = _planted_tile(view_cohort, site, "P001-S1")
    page.click_level0("s0", x + 100, y + 120)
    page.page.wait_for_selector('#tile-info td[data-name="attention"]')
    assert page.shown("attention") == pytest.approx(attention, rel=1e-9)
    assert page.shown("contribution") == pytest.approx(contribution, rel=1e-9)
    assert f"{x}, {y}" in page.page.locator("#tile-info").inner_text()
    assert page.page.locator('#tile-info td[data-name="phenotype"]').inner_text() == "planted"
    contribution_px = page.viewer_pixels(tmp_path / "view_contribution.png")
    page.page.select_option("#kind", "phenotype")
    page.ready("s0", "phenotype")
    phenotype_px = page.viewer_pixels(tmp_path / "view_phenotype.png")
    assert np.abs(phenotype_px - contribution_px).max(axis=2).__gt__(40).mean() > 0.05
    assert "planted" in page.page.locator("#legend").inner_text()
    page.page.screenshot(path=str(tmp_path / "view_page.png"))
    _keep(tmp_path / "view_page.png")
    assert page.errors == []


def test_top_strip_jumps_and_an_unreadable_slide_says_so(browser, served, tmp_path):
    url, site = served
    page = Page(browser, url)
    page.ready("s0")
    first = site.payload("s0")["top"][0]
    page.page.locator("#top-strip figure").first.click()
    page.page.wait_for_selector('#tile-info td[data-name="attention"]')
    assert page.shown("attention") == pytest.approx(first["attention"], rel=1e-9)
    key = next(k for k, e in site.slides.items() if e.slide_id == "P006-S1")
    page.page.locator(f'#patients button[data-key="{key}"]').click()
    alert = page.page.locator("#message")
    alert.wait_for(state="visible")
    assert "cannot be opened" in alert.inner_text() and "Traceback" not in alert.inner_text()
    page.page.screenshot(path=str(tmp_path / "view_unreadable.png"))
    _keep(tmp_path / "view_unreadable.png")
    assert page.errors == []


def test_static_export_opens_from_file_and_shows_the_same(browser, served, view_cohort, tmp_path):
    from feature_extraction.view.export import export_site

    _, site = served
    result = export_site(site, tmp_path / "export", ["P001-S1", "P002-S1"], max_side_px=1024)
    page = Page(browser, (result.out_dir / "index.html").as_uri())
    page.ready("s0")
    assert page.tiles and all(r.status == 200 for r in page.tiles)
    assert page.viewer_pixels(tmp_path / "export_attention.png").std() > 10
    x, y, attention, contribution = _planted_tile(view_cohort, site, "P001-S1")
    page.click_level0("s0", x + 30, y + 200)
    page.page.wait_for_selector('#tile-info td[data-name="attention"]')
    assert page.shown("attention") == pytest.approx(attention, rel=1e-9)
    assert page.shown("contribution") == pytest.approx(contribution, rel=1e-9)
    page.page.screenshot(path=str(tmp_path / "export_page.png"))
    _keep(tmp_path / "export_page.png")
    assert page.errors == []
