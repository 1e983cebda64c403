"""FastAPI (ASGI) with OpenTelemetry's own FastAPI instrumentation, beside manual flows.

What is current where, with the real middleware: inside a handler (async, or sync in the thread pool)
the SERVER span is live, so a flow there is part of the request. The ASGI middleware ends the SERVER
span as soon as the last body chunk is sent, *before* Starlette runs the response's background tasks;
those tasks (each wrapped by the FastAPI instrumentation in an INTERNAL ``BackgroundTask <name>`` span
under the ended request span) and ``asyncio.create_task`` work that outlives the handler still run in
the request's context, but the request has ended, so a flow there is a new root flow linked to the
request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel.testing import HudFlows, capture_flows


def view(span: ReadableSpan) -> dict[str, Any]:
    """A span as compared here: everything but the instrumentation's own HTTP details and ids."""
    attrs = dict(span.attributes or {})
    return {
        "name": span.name,
        "kind": span.kind,
        "hud": {k: v for k, v in attrs.items() if k.startswith("hud.") or k == A.ERROR_TYPE},
        "http.route": attrs.get("http.route"),
        "status": (span.status.status_code, span.status.description),
        "parent": span.parent.span_id if span.parent else None,
        "links": [link.context.span_id for link in span.links],
    }


def flow_view(name: str, links: list[int], **context: Any) -> dict[str, Any]:
    """The view of a successful custom root flow."""
    return {
        "name": name,
        "kind": SpanKind.INTERNAL,
        "hud": {
            A.FLOW_NAME: name,
            A.FLOW_TYPE: "custom",
            A.FRAMEWORK: "custom",
            A.FLOW_OUTCOME: "success",
            **{A.CONTEXT_PREFIX + k: v for k, v in context.items()},
        },
        "http.route": None,
        "status": (StatusCode.UNSET, None),
        "parent": None,
        "links": links,
    }


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


@pytest.fixture
def flows() -> Iterator[HudFlows]:
    with capture_flows() as capture:
        yield capture


@pytest.fixture
def app(flows: HudFlows) -> Iterator[FastAPI]:
    """A FastAPI app instrumented for one test (the ASGI send/receive spans left out), then restored."""
    application = FastAPI()
    FastAPIInstrumentor.instrument_app(
        application, tracer_provider=flows.tracer_provider, exclude_spans=["send", "receive"]
    )
    yield application
    FastAPIInstrumentor.uninstrument_app(application)


def test_flow_in_async_handler_is_skipped_and_context_lands_on_the_request(app, flows):
    """A flow in an ``async def`` handler is skipped (``in_request``); its ``set_context`` and
    ``set_failure`` are on the SERVER span."""

    @app.get("/pay/{order}")
    async def pay(order: str) -> dict[str, str]:
        async with hud.async_flow("pay-flow"):
            hud.set_context(order=order)
            hud.set_failure("CardDeclined", reason="insufficient funds")
        return {"order": order}

    with TestClient(app) as client:
        assert client.get("/pay/o-7").json() == {"order": "o-7"}

    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert flows.metric_points(A.METRIC_DURATION) == []
    assert [view(s) for s in flows.spans()] == [
        {
            "name": "GET /pay/{order}",
            "kind": SpanKind.SERVER,
            "hud": {
                "hud.context.order": "o-7",
                "hud.context.reason": "insufficient funds",
                A.FLOW_ERROR: "CardDeclined",
                A.ERROR_TYPE: "CardDeclined",
            },
            "http.route": "/pay/{order}",
            "status": (StatusCode.ERROR, "insufficient funds"),
            "parent": None,
            "links": [],
        }
    ]


def test_flow_in_sync_handler_under_an_internal_span_is_skipped(app, flows):
    """A plain ``def`` handler runs in the thread pool with the request's context copied; with an
    INTERNAL span between the request and a decorated function, the flow is still ``in_request``."""
    tracer = flows.tracer_provider.get_tracer("app")

    @hud.sync_flow("compute-quote")
    def compute_quote() -> int:
        hud.set_context(lines=4)
        return 42

    @app.get("/quote")
    def quote() -> dict[str, int]:
        with tracer.start_as_current_span("price-lookup"):
            return {"total": compute_quote()}

    with TestClient(app) as client:
        assert client.get("/quote").json() == {"total": 42}

    spans = flows.spans()
    request = only(spans, "GET /quote")
    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert [view(s) for s in spans] == [
        {
            "name": "price-lookup",
            "kind": SpanKind.INTERNAL,
            "hud": {},
            "http.route": None,
            "status": (StatusCode.UNSET, None),
            "parent": request.context.span_id,
            "links": [],
        },
        {
            "name": "GET /quote",
            "kind": SpanKind.SERVER,
            "hud": {"hud.context.lines": 4},
            "http.route": "/quote",
            "status": (StatusCode.UNSET, None),
            "parent": None,
            "links": [],
        },
    ]


def test_background_tasks_run_after_the_request_span_ended_and_start_linked_root_flows(app, flows):
    """Starlette runs ``BackgroundTasks`` after the response is sent; the ASGI middleware has ended
    the SERVER span by then (checked: each flow starts after the request span's end), so flows in an
    async and a sync background task are root flows, in their own traces, linked to the request."""

    async def send_email(to: str) -> None:
        async with hud.async_flow("send-email"):
            hud.set_context(to=to)

    @hud.sync_flow("update-stats")
    def update_stats(user: str) -> None:
        hud.set_context(user=user)

    @app.post("/signup")
    async def signup(background_tasks: BackgroundTasks) -> dict[str, bool]:
        background_tasks.add_task(send_email, "a@example.com")
        background_tasks.add_task(update_stats, "u-1")
        return {"ok": True}

    with TestClient(app) as client:
        assert client.post("/signup").json() == {"ok": True}

    spans = flows.spans()
    request = only(spans, "POST /signup")
    email_task = only(spans, "BackgroundTask send_email")
    stats_task = only(spans, "BackgroundTask update_stats")
    email = flows.flow("send-email").span
    stats = flows.flow("update-stats").span
    assert flows.skipped() == {}
    # The FastAPI instrumentation wraps each background task in an INTERNAL span under the (ended)
    # request span: that span is current in the task, and the flow links to it and to the request.
    for task in (email_task, stats_task):
        assert task.parent is not None and task.parent.span_id == request.context.span_id
        assert task.start_time >= request.end_time
    assert view(email) == flow_view(
        "send-email", [email_task.context.span_id, request.context.span_id], to="a@example.com"
    )
    stats_attrs = dict(stats.attributes or {})
    assert stats_attrs[A.CODE_FUNCTION_NAME].endswith("update_stats")
    assert view(stats) == flow_view(
        "update-stats", [stats_task.context.span_id, request.context.span_id], user="u-1"
    )
    for flow in (email, stats):
        assert flow.start_time >= request.end_time
        assert flow.context.trace_id != request.context.trace_id
    assert view(request)["hud"] == {}
    assert sorted(dict(p.attributes)[A.FLOW_NAME] for p in flows.metric_points(A.METRIC_DURATION)) == [
        "send-email",
        "update-stats",
    ]


def test_task_created_in_the_handler_that_outlives_the_request_starts_a_linked_root_flow(app, flows):
    """``asyncio.create_task`` copies the request's context; the task goes on after the response, and
    once the request span has ended its flow is a root flow linked to the request."""
    released = threading.Event()
    finished = threading.Event()
    tasks: list[asyncio.Task[None]] = []

    async def reindex(doc: str) -> None:
        await asyncio.to_thread(released.wait, 5)
        async with hud.async_flow("reindex"):
            hud.set_context(doc=doc)
        finished.set()

    @app.put("/docs/{doc}")
    async def put_doc(doc: str) -> dict[str, str]:
        tasks.append(asyncio.create_task(reindex(doc)))
        return {"doc": doc}

    with TestClient(app) as client:
        assert client.put("/docs/d-1").json() == {"doc": "d-1"}
        request = only(flows.spans(), "PUT /docs/{doc}")  # ended with the response
        released.set()
        assert finished.wait(5)

    flow = flows.flow("reindex").span
    assert flows.skipped() == {}
    assert view(flow) == flow_view("reindex", [request.context.span_id], doc="d-1")
    assert flow.start_time >= request.end_time
    assert flow.context.trace_id != request.context.trace_id


def test_task_awaited_inside_the_handler_is_part_of_the_request(app, flows):
    """The same task awaited before the handler returns runs while the request is live: skipped as
    ``in_request``, its context on the request span."""

    async def reindex(doc: str) -> None:
        async with hud.async_flow("reindex"):
            hud.set_context(doc=doc)

    @app.put("/docs/{doc}")
    async def put_doc(doc: str) -> dict[str, str]:
        await asyncio.create_task(reindex(doc))
        return {"doc": doc}

    with TestClient(app) as client:
        assert client.put("/docs/d-2").json() == {"doc": "d-2"}

    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert [view(s) for s in flows.spans()] == [
        {
            "name": "PUT /docs/{doc}",
            "kind": SpanKind.SERVER,
            "hud": {"hud.context.doc": "d-2"},
            "http.route": "/docs/{doc}",
            "status": (StatusCode.UNSET, None),
            "parent": None,
            "links": [],
        }
    ]
