"""The JSON API and static files behind the web page, and the `serve`/`demo` options that start it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from hud_otel import _attributes as A
from hud_otel._receiver import OtlpReceiver
from hud_otel._view import FlowView, histogram
from hud_otel._web import WebServer
from tests.test_viewer_cli import MS, Pipeline, _cli, _env, _read_line

START_S = 1_700_000_000  # Pipeline's clock: the first flow starts one second after this


class Web:
    """A FlowView fed by the real SDK over OTLP/gRPC, and the web server in front of it."""

    def __init__(self, pipeline: Pipeline, server: WebServer) -> None:
        self.pipeline = pipeline
        self.server = server

    def get(self, path: str, host: Optional[str] = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.server.url.rstrip("/") + path)
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str) -> Any:
        status, headers, body = self.get(path)
        assert (status, headers["Content-Type"]) == (200, "application/json"), body
        return json.loads(body)


@pytest.fixture
def web() -> Iterator[Web]:
    view = FlowView()
    with OtlpReceiver(http_port=None) as rx:
        view.attach(rx)
        pipeline = Pipeline(rx, view)
        with WebServer(view, port=0) as server:
            yield Web(pipeline, server)
        pipeline.provider.shutdown()


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def test_charts_count_invocations_per_second_and_bucket_durations(web: Web) -> None:
    """/api/charts/<name> gives, per (flow type, framework), the invocations per start second by
    outcome (empty seconds included) and the duration histogram on 1-2-5 bounds, each value in the
    bucket whose upper bound it does not exceed; a queue flow adds the queue-wait histogram."""
    p = web.pipeline
    p.flow("report", 3)  # starts at START_S + 1
    p.flow("report", 5, outcome=A.OUTCOME_FAILURE, error="KeyError")  # + 2: 5 is on a bound
    p.clock += 1000 * MS  # one second without any invocation
    p.flow("report", 12, outcome=A.OUTCOME_CANCELLED)  # + 4
    for wait in (40.0, 150.0, 160.0):
        p.flow("report", 0.3, flow_type="queue", framework="sqs", extra={A.QUEUE_E2E_DURATION_MS: wait})
    p.view_now()

    charts = web.json("/api/charts/report")
    assert charts["schema"] == "hud-otel.charts/1" and charts["flow"] == "report"
    custom, queue = charts["entries"]
    assert custom == {
        "flow_type": "custom",
        "framework": "custom",
        "timeline": {
            "bucket_seconds": 1,
            "buckets": [
                {
                    "start": "2023-11-14T22:13:21.000Z",
                    "start_unix": START_S + 1,
                    "success": 1,
                    "failure": 0,
                    "cancelled": 0,
                },
                {
                    "start": "2023-11-14T22:13:22.000Z",
                    "start_unix": START_S + 2,
                    "success": 0,
                    "failure": 1,
                    "cancelled": 0,
                },
                {
                    "start": "2023-11-14T22:13:23.000Z",
                    "start_unix": START_S + 3,
                    "success": 0,
                    "failure": 0,
                    "cancelled": 0,
                },
                {
                    "start": "2023-11-14T22:13:24.000Z",
                    "start_unix": START_S + 4,
                    "success": 0,
                    "failure": 0,
                    "cancelled": 1,
                },
            ],
        },
        "durations": {
            "samples": 3,
            "buckets": [
                {"low_ms": 2.0, "high_ms": 5.0, "count": 2},
                {"low_ms": 5.0, "high_ms": 10.0, "count": 0},
                {"low_ms": 10.0, "high_ms": 20.0, "count": 1},
            ],
        },
        "queue_waits": None,
    }
    assert (queue["flow_type"], queue["framework"]) == ("queue", "sqs")
    assert [b["start_unix"] for b in queue["timeline"]["buckets"]] == [START_S + 5, START_S + 6, START_S + 7]
    assert queue["durations"] == {"samples": 3, "buckets": [{"low_ms": 0.2, "high_ms": 0.5, "count": 3}]}
    assert queue["queue_waits"] == {
        "samples": 3,
        "buckets": [
            {"low_ms": 20.0, "high_ms": 50.0, "count": 1},
            {"low_ms": 50.0, "high_ms": 100.0, "count": 0},
            {"low_ms": 100.0, "high_ms": 200.0, "count": 2},
        ],
    }


def test_timeline_widens_its_buckets_to_stay_within_sixty(web: Web) -> None:
    """Invocations spread over twelve minutes land in at most 60 consecutive buckets of the smallest
    round width that allows it (10 s would need 74), aligned on multiples of it; none is lost."""
    p = web.pipeline
    for i in range(50):
        p.clock += 14_000 * MS  # with Pipeline's own second: one start every 15 s
        p.flow("spread", 1, outcome=A.OUTCOME_FAILURE if i % 5 == 0 else A.OUTCOME_SUCCESS)
    p.view_now()

    (entry,) = web.json("/api/charts/spread")["entries"]
    timeline = entry["timeline"]
    width, buckets = timeline["bucket_seconds"], timeline["buckets"]
    assert width == 15
    assert len(buckets) <= 60
    assert all(b["start_unix"] % width == 0 for b in buckets)
    assert [b["start_unix"] for b in buckets] == list(
        range(buckets[0]["start_unix"], buckets[-1]["start_unix"] + 1, width)
    )
    assert sum(b["success"] for b in buckets) == 40
    assert sum(b["failure"] for b in buckets) == 10


def test_timeline_memory_is_bounded_and_keeps_the_newest_seconds(web: Web) -> None:
    """With timeline_seconds=10, a flow seen in 25 distinct seconds keeps counts for at most the 10
    newest of them (the oldest dropped a tenth at a time), and an invocation older than all it
    keeps is left out of the timeline while still counted in the row."""
    view = FlowView(timeline_seconds=10)
    web.pipeline.rx.add_listener(on_spans=view.add_spans)
    p = web.pipeline
    for _ in range(25):
        p.flow("busy", 1)
    p.view_now()
    p.clock -= 100_000 * MS
    p.flow("busy", 1)  # long before everything kept
    p.view_now()

    charts = view.charts("busy")
    assert charts is not None
    (entry,) = charts["entries"]
    counted = [b["start_unix"] for b in entry["timeline"]["buckets"] if b["success"]]
    assert 1 <= len(counted) <= 10
    assert counted[-1] == START_S + 25
    assert counted == list(range(START_S + 26 - len(counted), START_S + 26))
    assert view.snapshot()["custom_flows"][0]["invocations"] == 26


def test_histogram_edges() -> None:
    """The histogram puts 0 in the first bucket, a value equal to a bound below it, anything over
    10^7 ms in an open-ended last bucket, and keeps empty buckets only between used ones."""
    low, *_, high = histogram([0.0, 0.01, 1e9])["buckets"]
    assert low == {"low_ms": 0.0, "high_ms": 0.01, "count": 2}
    assert high == {"low_ms": 1e7, "high_ms": None, "count": 1}
    assert histogram([]) == {"samples": 0, "buckets": []}
    assert histogram([1.0, 2.0, 2.0000001])["buckets"] == [
        {"low_ms": 0.5, "high_ms": 1.0, "count": 1},
        {"low_ms": 1.0, "high_ms": 2.0, "count": 1},
        {"low_ms": 2.0, "high_ms": 5.0, "count": 1},
    ]


def test_api_answers_the_views_of_the_flow_view(web: Web) -> None:
    """/api/view and /api/flows/<name> answer exactly FlowView.snapshot() and detail(), also for a
    name with a slash, a space and non-ASCII letters (percent-encoded); an unknown flow or API path
    is a JSON 404; nothing is cached."""
    name = "reports/daily résumé"
    web.pipeline.flow(name, 7, extra={"hud.context.batch": 3})
    web.pipeline.flow("other", 1)
    web.pipeline.view_now()

    view = web.pipeline.view
    assert web.json("/api/view") == json.loads(json.dumps(view.snapshot()))
    assert web.json(f"/api/flows/{_quote(name)}") == json.loads(json.dumps(view.detail(name)))
    assert web.json(f"/api/charts/{_quote(name)}")["flow"] == name
    for path in ("/api/flows/nope", "/api/charts/nope", "/api/flows/", "/api/other"):
        status, headers, body = web.get(path)
        assert (status, headers["Content-Type"]) == (404, "application/json"), path
        assert "not found" in json.loads(body)["error"]
    _, headers, _ = web.get("/api/view")
    assert headers["Cache-Control"] == "no-store"


def test_pages_and_static_files(web: Web) -> None:
    """Every page path serves the same index.html, which loads its script and styles from /static/;
    the static files have their content types; paths outside the page set, including attempts to
    climb out of the static folder, are 404; every answer carries a same-origin-only CSP."""
    pages = [web.get(path) for path in ("/", "/queues", "/flows/x", f"/flows/{_quote('a/b')}")]
    assert {(status, body) for status, _, body in pages} == {(200, pages[0][2])}
    html = pages[0][2].decode()
    assert '<script src="/static/app.js"' in html and '<script src="/static/charts.js"' in html
    assert pages[0][1]["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in pages[0][1]["Content-Security-Policy"]

    expected = {
        "/static/app.js": "text/javascript; charset=utf-8",
        "/static/charts.js": "text/javascript; charset=utf-8",
        "/static/style.css": "text/css; charset=utf-8",
        "/static/favicon.svg": "image/svg+xml",
    }
    for path, content_type in expected.items():
        status, headers, body = web.get(path)
        assert (status, headers["Content-Type"]) == (200, content_type), path
        assert body
    for path in (
        "/static/../_web.py",
        "/static/%2e%2e/_web.py",
        "/static/",
        "/flows/",
        "/index.html",
        "/nope",
    ):
        status, headers, _ = web.get(path)
        assert status == 404, path
        assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_only_loopback_host_names_are_served(web: Web) -> None:
    """A request naming any host but 127.0.0.1, localhost or [::1] (a DNS name rebound to loopback,
    say) is refused with 403, pages and API alike; the loopback names are served."""
    port = web.server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert web.get("/api/view", host=host)[0] == 200, host
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "", f"[::2]:{port}"):
        for path in ("/", "/api/view"):
            assert web.get(path, host=host)[0] == 403, (host, path)


# --------------------------------------------------------------------------------------------------
# The command line


def _start(*args: str, cwd: Optional[Path] = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd
    )


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return out, err


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_prints_the_web_url_and_serves_the_page(procs: list[subprocess.Popen[str]]) -> None:
    """`serve --json --web-port 0` puts the page's URL and port in its listening line; the page and
    its API answer there, the chart route also on the OTLP HTTP port; Ctrl-C stops both."""
    proc = _start("serve", "--json", "--grpc-port", "0", "--http-port", "0", "--web-port", "0")
    procs.append(proc)
    listening = json.loads(_read_line(proc, timeout=20))
    assert listening["web_url"] == f"http://127.0.0.1:{listening['web_port']}/"
    with urllib.request.urlopen(listening["web_url"], timeout=5) as response:
        assert b'<main id="app"' in response.read()
    assert _get_json(listening["web_url"] + "api/view")["schema"] == "hud-otel.view/1"
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get_json(listening["http_endpoint"] + "/api/charts/nope")
    assert missing.value.code == 404
    _stop(proc)
    with pytest.raises(OSError):
        urllib.request.urlopen(listening["web_url"], timeout=2)


def test_serve_without_the_web_page(procs: list[subprocess.Popen[str]]) -> None:
    """`serve --no-web` serves no page: its listening line says null for the URL and the port."""
    proc = _start("serve", "--json", "--grpc-port", "0", "--http-port", "0", "--no-web")
    procs.append(proc)
    listening = json.loads(_read_line(proc, timeout=20))
    assert (listening["web_url"], listening["web_port"]) == (None, None)
    _stop(proc)


def test_serve_web_port_taken(procs: list[subprocess.Popen[str]]) -> None:
    """An explicit --web-port already in use makes `serve` exit 1 and say so; the default port
    (4319) in use only moves the page to a free port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            _cli("serve", "--grpc-port", "0", "--http-port", "0", "--web-port", str(port)),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=20,
        )
    assert result.returncode == 1
    assert "cannot serve the web page" in result.stderr

    with socket.socket() as default:
        try:
            default.bind(("127.0.0.1", 4319))
            default.listen()
        except OSError:
            pass  # something else holds it already: taken all the same
        proc = _start("serve", "--json", "--grpc-port", "0", "--http-port", "0")
        procs.append(proc)
        listening = json.loads(_read_line(proc, timeout=20))
        assert listening["web_port"] != 4319
        assert _get_json(listening["web_url"] + "api/view")["custom_flows"] == []
        _stop(proc)


def test_demo_web_keeps_the_page_up(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    """`demo --json --web --web-port 0` prints the view, then a line with the page's URL, and serves
    the demo's flows there until Ctrl-C, then exits 0."""
    (tmp_path / "job.py").write_text(
        textwrap.dedent(
            """
            import hud_otel as hud_sdk

            @hud_sdk.sync_flow("nightly-report")
            def report(i):
                hud_sdk.set_context(run=i)
                if i == 1:
                    raise ValueError("bad day")

            def main():
                for i in range(3):
                    try:
                        report(i)
                    except ValueError:
                        pass
            """
        )
    )
    proc = _start("demo", "--json", "--web", "--web-port", "0", "--examples", str(tmp_path), cwd=tmp_path)
    procs.append(proc)
    printed = json.loads(_read_line(proc, timeout=60))
    web = json.loads(_read_line(proc, timeout=20))
    assert web["event"] == "web" and web["web_url"] == f"http://127.0.0.1:{web['web_port']}/"
    served = _get_json(web["web_url"] + "api/view")
    assert served["custom_flows"] == printed["custom_flows"]
    (row,) = served["custom_flows"]
    assert (row["flow"], row["invocations"], row["failures"]) == ("nightly-report", 3, 1)
    detail = _get_json(web["web_url"] + "api/flows/nightly-report")
    assert sorted(inv["context"]["run"] for inv in detail["entries"][0]["recent"]) == [0, 1, 2]
    _stop(proc)
