"""Instrumented HTTP clients (requests, httpx) and database (sqlite3) called from inside flows.

Every span another instrumentation starts inside a flow is a child of the flow span, in the flow's
trace, and carries ``hud.flow.name``, so a backend can break a flow down by its calls. The HTTP server
is a real one on loopback.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from werkzeug.serving import make_server

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel.testing import HudFlows, capture_flows


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A plain WSGI server on an ephemeral loopback port."""
    server = make_server("127.0.0.1", 0, _app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/items"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def flows() -> Iterator[HudFlows]:
    """hud_otel on in-memory parts, with requests, httpx and sqlite3 instrumented for this test only."""
    with capture_flows() as capture:
        tp = capture.tracer_provider
        instrumentors: list[Any] = [RequestsInstrumentor(), HTTPXClientInstrumentor(), SQLite3Instrumentor()]
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=tp)
        try:
            yield capture
        finally:
            for instrumentor in instrumentors:
                instrumentor.uninstrument()


def view(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code,
        "trace": span.context.trace_id,
        "parent": span.parent.span_id if span.parent else None,
        "links": list(span.links),
    }


def http_view(flow: ReadableSpan, url: str, name: str, parent: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "GET",
        "kind": SpanKind.CLIENT,
        "attributes": {
            "http.method": "GET",
            "http.url": url,
            **extra,
            A.FLOW_NAME: name,
            "http.status_code": 200,
        },
        "status": StatusCode.UNSET,
        "trace": flow.context.trace_id,
        "parent": parent,
        "links": [],
    }


def flow_attrs(name: str) -> dict[str, Any]:
    return {A.FLOW_NAME: name, A.FLOW_TYPE: "custom", A.FRAMEWORK: "custom", A.FLOW_OUTCOME: "success"}


def test_http_and_database_calls_in_a_flow_are_its_children_and_carry_its_name(flows, url):
    """requests, httpx and sqlite3 spans made inside a ``with`` flow are CLIENT children of the flow
    span, in its trace, with ``hud.flow.name``; the flow itself is one root span with one metric."""
    with hud.sync_flow("sync-inventory"):
        assert requests.get(url, timeout=5).text == "ok"
        assert httpx.get(url, timeout=5).text == "ok"
        db = sqlite3.connect(":memory:")
        try:
            cursor = db.cursor()
            cursor.execute("CREATE TABLE items (sku TEXT)")
            cursor.execute("INSERT INTO items VALUES (?)", ("a-1",))
            assert cursor.execute("SELECT sku FROM items").fetchall() == [("a-1",)]
        finally:
            db.close()

    flow = flows.flow("sync-inventory").span
    fid = flow.context.span_id

    def db_view(verb: str, statement: str) -> dict[str, Any]:
        return {
            "name": verb,
            "kind": SpanKind.CLIENT,
            "attributes": {A.FLOW_NAME: "sync-inventory", "db.system": "sqlite", "db.statement": statement},
            "status": StatusCode.UNSET,
            "trace": flow.context.trace_id,
            "parent": fid,
            "links": [],
        }

    user_agent = {"user_agent.original": f"python-requests/{requests.__version__}"}
    assert [view(s) for s in flows.spans()] == [
        http_view(flow, url, "sync-inventory", fid, **user_agent),
        http_view(flow, url, "sync-inventory", fid),
        db_view("CREATE", "CREATE TABLE items (sku TEXT)"),
        db_view("INSERT", "INSERT INTO items VALUES (?)"),
        db_view("SELECT", "SELECT sku FROM items"),
        {
            "name": "sync-inventory",
            "kind": SpanKind.INTERNAL,
            "attributes": flow_attrs("sync-inventory"),
            "status": StatusCode.UNSET,
            "trace": flow.context.trace_id,
            "parent": None,
            "links": [],
        },
    ]
    assert flows.skipped() == {}
    assert [dict(p.attributes) for p in flows.metric_points(A.METRIC_DURATION)] == [
        flow_attrs("sync-inventory")
    ]


def test_calls_under_the_users_own_span_inside_a_flow_carry_the_flow_name(flows, url):
    """With the user's INTERNAL span between the flow and the call (and a decorated flow function), the
    INTERNAL span and the HTTP span under it both carry ``hud.flow.name``."""
    tracer = flows.tracer_provider.get_tracer("app")

    @hud.sync_flow("nightly-export")
    def export() -> None:
        with tracer.start_as_current_span("upload-batch"):
            requests.get(url, timeout=5)

    export()
    flow = flows.flow("nightly-export").span
    upload = next(s for s in flows.spans() if s.name == "upload-batch")
    user_agent = {"user_agent.original": f"python-requests/{requests.__version__}"}
    assert [view(s) for s in flows.spans()[:2]] == [
        http_view(flow, url, "nightly-export", upload.context.span_id, **user_agent),
        {
            "name": "upload-batch",
            "kind": SpanKind.INTERNAL,
            "attributes": {A.FLOW_NAME: "nightly-export"},
            "status": StatusCode.UNSET,
            "trace": flow.context.trace_id,
            "parent": flow.context.span_id,
            "links": [],
        },
    ]


def test_concurrent_async_flows_each_name_their_own_http_calls(flows, url):
    """Two async flows running at once in one event loop, each calling httpx: every CLIENT span is in
    its own flow's trace and carries its own flow's name (the tracking is per context)."""

    async def fetch(name: str, client: httpx.AsyncClient) -> None:
        async with hud.async_flow(name):
            for _ in range(3):
                await client.get(url)
                await asyncio.sleep(0)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            await asyncio.gather(fetch("poll-a", client), fetch("poll-b", client))

    asyncio.run(main())
    for name in ("poll-a", "poll-b"):
        flow = flows.flow(name).span
        calls = [s for s in flows.spans() if s.kind is SpanKind.CLIENT and s.attributes[A.FLOW_NAME] == name]
        assert [view(s) for s in calls] == [http_view(flow, url, name, flow.context.span_id)] * 3


def test_calls_outside_any_flow_carry_no_flow_name(flows, url):
    """The same instrumented calls made outside a flow (and after one ended) have no ``hud.flow.name``
    and are not in any flow's trace."""
    with hud.sync_flow("short"):
        pass
    requests.get(url, timeout=5)
    [call] = [s for s in flows.spans() if s.kind is SpanKind.CLIENT]
    assert A.FLOW_NAME not in (call.attributes or {})
    assert call.parent is None
    assert call.context.trace_id != flows.flow("short").span.context.trace_id
