"""The viewer's web server: a Flask app over a :class:`~.site.Site`.

Every route maps a slide key (``s0``, ...) or a packaged static file to a document; nothing in a
URL is used as a path except the static files, which Flask's ``send_from_directory`` confines to
the package's ``static/`` folder (werkzeug's ``safe_join`` refuses ``..`` and absolute paths).
Anything unknown is a 404; a slide that cannot be opened answers with its one-line message (the
page shows it), never a stack trace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from pathlib import Path
from typing import Any

from feature_extraction.view.deepzoom import SlideUnavailable, TileNotFound
from feature_extraction.view.site import Site

#: The page and its scripts, shipped as package data.
STATIC_DIR = Path(__file__).parent / "static"
#: The Host names a loopback server answers to: another name (a web page's DNS rebound to
#: 127.0.0.1) gets a 400, so that no other site can read the slides through the browser.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_NO_CACHE = {"Cache-Control": "no-store"}


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port (``[::1]:80`` -> ``[::1]``)."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_app(site: Site, trusted_hosts: Collection[str] | None = LOOPBACK_NAMES) -> Any:
    """The Flask app serving ``site``.

    Parameters
    ----------
    site : the documents to serve
    trusted_hosts : the ``Host`` names answered (others get 400); None answers any (a server
        bound beyond loopback, whose user was warned)

    Returns
    -------
    flask.Flask
    """
    from flask import Flask, Response, abort, send_from_directory

    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False  # "//etc/passwd" is a 404, not a redirect
    _guard(app, trusted_hosts)

    def script(text: str) -> Response:
        return Response(text, mimetype="text/javascript", headers=_NO_CACHE)

    def known(key: str) -> None:
        if key not in site.slides:
            abort(404)

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        return send_from_directory(STATIC_DIR, name)

    @app.get("/data.js")
    def data() -> Response:
        return script(site.data_js())

    @app.get("/slides/<key>.js")
    def slide(key: str) -> Response:
        known(key)
        return script(site.slide_js(key))

    def answer(make: Any, mimetype: str) -> Response:
        """``make()``'s bytes; 404 for an unknown address, the one-line message for a slide
        that cannot be read."""
        try:
            return Response(make(), mimetype=mimetype)
        except (KeyError, TileNotFound):
            abort(404)
        except SlideUnavailable as exc:
            return Response(str(exc), status=404, mimetype="text/plain")

    @app.get("/dzi/<key>_files/<int:level>/<int:col>_<int:row>.jpeg")
    def tile(key: str, level: int, col: int, row: int) -> Response:
        known(key)
        slide_id = site.entry(key).slide_id
        return answer(lambda: site.deepzoom.tile(slide_id, level, col, row), "image/jpeg")

    @app.get("/overlay/<key>/<kind>.png")
    def overlay(key: str, kind: str) -> Response:
        known(key)
        return answer(lambda: site.overlay(key, kind), "image/png")

    @app.get("/region/<key>/<int:index>.jpg")
    def region(key: str, index: int) -> Response:
        known(key)
        return answer(lambda: site.region(key, index), "image/jpeg")

    return app


def _guard(app: Any, trusted_hosts: Collection[str] | None) -> None:
    """Answer only the trusted ``Host`` names (400 otherwise: a site that rebinds its DNS to
    127.0.0.1 cannot read the slides), and forbid sniffing, foreign resources and framing."""
    from flask import abort, request

    @app.before_request
    def check_host() -> None:
        if trusted_hosts is not None:
            if host_name(request.headers.get("Host", "")).lower() not in trusted_hosts:
                abort(400)

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'"
        )
        return response


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def quiet() -> Any:
    """werkzeug's request handler without a log line per request (a page asks for hundreds)."""
    from werkzeug.serving import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    return QuietHandler


def serve(site: Site, host: str = "127.0.0.1", port: int = 0, on_ready: Any = None) -> None:
    """Serve ``site`` until interrupted, with werkzeug's threaded server.

    Parameters
    ----------
    site : what to serve
    host : the address to bind (loopback unless the caller chose otherwise)
    port : the port; 0 picks a free one
    on_ready : called with the URL once the server listens
    """
    from werkzeug.serving import make_server

    trusted = LOOPBACK_NAMES | {f"[{host}]" if ":" in host else host} if is_loopback(host) else None
    app = create_app(site, trusted)
    server = make_server(host, port, app, threaded=True, request_handler=quiet())
    shown = f"[{host}]" if ":" in host else host
    if on_ready is not None:
        on_ready(f"http://{shown}:{server.server_port}/")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        site.deepzoom.close()
