"""The web page of ``hud-otel serve``: static files from ``hud_otel/web/`` and a small JSON API.

It listens on loopback only, on its own port, with the standard library's threading HTTP server; the
page polls the JSON API, so there is no build step and nothing beyond the package to install.

Pages (all the same ``index.html``; ``app.js`` draws the one the path names):

- ``/`` the Custom Flows table, ``/queues`` the Queues table, ``/flows/<name>`` one flow.

JSON API (``GET``; flow names are percent-encoded in the path):

- ``/api/view``: :meth:`FlowView.snapshot` (schema ``hud-otel.view/1``);
- ``/api/flows/<name>``: :meth:`FlowView.detail` (schema ``hud-otel.flow/1``), 404 when unknown;
- ``/api/charts/<name>``: :meth:`FlowView.charts` (schema ``hud-otel.charts/1``), 404 when unknown.

Requests whose ``Host`` header is not a loopback name are refused (403), so a web site cannot reach
the page through a DNS name rebound to 127.0.0.1.

Example::

    with WebServer(view, port=0) as web:
        print("open", web.url)
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

from hud_otel._view import FlowView

__all__ = ["DEFAULT_WEB_PORT", "WebServer"]

_log = logging.getLogger("hud_otel.web")

DEFAULT_WEB_PORT = 4319
_HOST = "127.0.0.1"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_PAGES = ("/", "/queues")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from this server; no inline script, no third party.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static_files() -> Dict[str, Tuple[str, bytes]]:
    """The files of ``hud_otel/web/`` by name, read once: they are small and never change."""
    files: Dict[str, Tuple[str, bytes]] = {}
    for entry in importlib.resources.files("hud_otel").joinpath("web").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _CONTENT_TYPES:
            files[entry.name] = (_CONTENT_TYPES[suffix], entry.read_bytes())
    return files


class WebServer:
    """Serves the flow viewer page for ``view`` on ``http://127.0.0.1:<port>/``.

    ``port=0`` picks a free port. :meth:`start` raises ``OSError`` when the port is taken.

    Example::

        web = WebServer(view, port=0).start()
        print(web.url)
        web.stop()
    """

    def __init__(self, view: FlowView, port: int = DEFAULT_WEB_PORT) -> None:
        self._view = view
        self._want_port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._routes: Dict[str, Callable[[str], Optional[object]]] = {
            "/api/flows/": view.detail,
            "/api/charts/": view.charts,
        }

    def start(self) -> WebServer:
        """Bind and serve in a background thread; returns ``self``."""
        if self._server is not None:
            return self
        server = _Server((_HOST, self._want_port), _Handler)
        server.web = self
        server.files = _static_files()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="hud-otel-web", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("the web server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The address of the Custom Flows page, ``http://127.0.0.1:<port>/``."""
        return f"http://{_HOST}:{self.port}/"

    def _api(self, path: str) -> Optional[object]:
        if path == "/api/view":
            return self._view.snapshot()
        for prefix, handler in self._routes.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return handler(urllib.parse.unquote(path[len(prefix) :]))
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    web: WebServer
    files: Dict[str, Tuple[str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    server_version = "hud-otel"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("web %s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        try:
            self._get()
        except Exception:
            _log.exception("hud-otel web: GET handler failed")
            try:
                self._send_json(500, {"error": "internal error"})
            except OSError:
                pass

    def _get(self) -> None:
        if not self._host_is_loopback():
            self._send(403, "text/plain; charset=utf-8", b"hud-otel: only loopback host names are served\n")
            return
        # The raw path: a flow name with "/" in it arrives as %2F and is decoded after routing.
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/api/"):
            result = self.server.web._api(path)
            if result is None:
                self._send_json(404, {"error": f"not found: {path}"})
            else:
                self._send_json(200, result)
            return
        name: Optional[str] = None
        if path in _PAGES or (path.startswith("/flows/") and len(path) > len("/flows/")):
            name = "index.html"
        elif path.startswith("/static/"):
            name = path[len("/static/") :]
        found = self.server.files.get(name) if name is not None else None
        if found is None:
            self._send(404, "text/plain; charset=utf-8", f"not found: {path}\n".encode())
            return
        content_type, body = found
        self._send(200, content_type, body)

    def _host_is_loopback(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        # "[::1]:4319" keeps its brackets; "127.0.0.1:4319" loses its port.
        name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
        return name in _LOOPBACK_NAMES

    def _send_json(self, status: int, payload: object) -> None:
        self._send(status, "application/json", json.dumps(payload).encode("utf-8"))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # The page polls: a cached answer would freeze it.
        self.send_header("Cache-Control", "no-store")
        for header, value in _SECURITY_HEADERS.items():
            self.send_header(header, value)
        self.end_headers()
        self.wfile.write(body)
