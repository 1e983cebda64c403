"""Flask (WSGI) with OpenTelemetry's own Flask instrumentation, beside manual flows.

The Flask instrumentation makes a SERVER span per request; a flow started inside the handler is part of
that request (skipped, counted ``in_request``, its context and failure written on the request span),
and a flow started in a thread that was handed the request's context and outlives the request is a new
root flow linked to the request.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
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


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


@pytest.fixture
def flows() -> Iterator[HudFlows]:
    with capture_flows() as capture:
        yield capture


def instrumented(app: Flask, flows: HudFlows) -> Any:
    FlaskInstrumentor().instrument_app(app, tracer_provider=flows.tracer_provider)
    return app.test_client()


def test_flow_in_handler_is_skipped_and_its_context_and_failure_land_on_the_request(flows):
    """A flow opened directly in a Flask handler is not exported: ``hud.flow.skipped{in_request}``
    counts it and its ``set_context``/``set_failure`` are on the SERVER span, which is Hud's flow for
    that request."""
    app = Flask(__name__)

    @app.route("/checkout")
    def checkout() -> str:
        with hud.sync_flow("checkout-flow"):
            hud.set_context(user="u1", items=3)
            hud.set_failure("PaymentDeclined", reason="card expired")
        return "ok"

    client = instrumented(app, flows)
    try:
        assert client.get("/checkout").status_code == 200
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert flows.metric_points(A.METRIC_DURATION) == []
    assert [view(s) for s in flows.spans()] == [
        {
            "name": "GET /checkout",
            "kind": SpanKind.SERVER,
            "hud": {
                "hud.context.user": "u1",
                "hud.context.items": 3,
                "hud.context.reason": "card expired",
                A.FLOW_ERROR: "PaymentDeclined",
                A.ERROR_TYPE: "PaymentDeclined",
            },
            "http.route": "/checkout",
            "status": (StatusCode.ERROR, "card expired"),
            "parent": None,
            "links": [],
        }
    ]


def test_flow_under_an_internal_span_in_the_handler_is_still_in_the_request(flows):
    """With the user's own INTERNAL spans between the request and the flow (and a decorated function),
    the flow is still skipped as ``in_request``; the context lands on the request span, and the INTERNAL
    spans do not carry ``hud.flow.name`` (no flow is running)."""
    app = Flask(__name__)
    tracer = flows.tracer_provider.get_tracer("app")

    @hud.sync_flow("load-report")
    def load_report() -> int:
        hud.set_context(rows=10)
        return 10

    @app.route("/report")
    def report() -> str:
        with tracer.start_as_current_span("render"), tracer.start_as_current_span("query"):
            return str(load_report())

    client = instrumented(app, flows)
    try:
        assert client.get("/report").data == b"10"
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    spans = flows.spans()
    request = only(spans, "GET /report")
    render = only(spans, "render")
    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert [view(s) for s in spans] == [
        {
            "name": "query",
            "kind": SpanKind.INTERNAL,
            "hud": {},
            "http.route": None,
            "status": (StatusCode.UNSET, None),
            "parent": render.context.span_id,
            "links": [],
        },
        {
            "name": "render",
            "kind": SpanKind.INTERNAL,
            "hud": {},
            "http.route": None,
            "status": (StatusCode.UNSET, None),
            "parent": request.context.span_id,
            "links": [],
        },
        {
            "name": "GET /report",
            "kind": SpanKind.SERVER,
            "hud": {"hud.context.rows": 10},
            "http.route": "/report",
            "status": (StatusCode.UNSET, None),
            "parent": None,
            "links": [],
        },
    ]


def test_thread_handed_the_request_context_that_outlives_it_starts_a_linked_root_flow(flows):
    """A thread started in the handler with ``contextvars.copy_context()`` still sees the request span
    as current after the response; once that span has ended, a flow there is a new root flow (own trace)
    linked to the request and to the INTERNAL span current when the thread was started."""
    app = Flask(__name__)
    tracer = flows.tracer_provider.get_tracer("app")
    released = threading.Event()
    workers: list[threading.Thread] = []
    seen: dict[str, Any] = {}

    def send_receipt() -> None:
        released.wait(5)
        seen["current"] = trace.get_current_span()
        with hud.sync_flow("send-receipt"):
            hud.set_context(order="o-1")

    @app.route("/order", methods=["POST"])
    def order() -> str:
        with tracer.start_as_current_span("enqueue-receipt"):
            worker = threading.Thread(target=contextvars.copy_context().run, args=(send_receipt,))
            workers.append(worker)
            worker.start()
        return "accepted"

    client = instrumented(app, flows)
    try:
        assert client.post("/order").status_code == 200
        request = only(flows.spans(), "POST /order")  # ended with the response
        released.set()
        workers[0].join(5)
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    enqueue = only(flows.spans(), "enqueue-receipt")
    flow = flows.flow("send-receipt")
    assert seen["current"].get_span_context() == enqueue.context
    assert flows.skipped() == {}
    assert flow.span.context.trace_id != request.context.trace_id
    assert flow.span.start_time >= request.end_time
    assert view(flow.span) == {
        "name": "send-receipt",
        "kind": SpanKind.INTERNAL,
        "hud": {
            A.FLOW_NAME: "send-receipt",
            A.FLOW_TYPE: "custom",
            A.FRAMEWORK: "custom",
            A.FLOW_OUTCOME: "success",
            "hud.context.order": "o-1",
        },
        "http.route": None,
        "status": (StatusCode.UNSET, None),
        "parent": None,
        "links": [enqueue.context.span_id, request.context.span_id],
    }
    [point] = flows.metric_points(A.METRIC_DURATION)
    assert dict(point.attributes) == {
        A.FLOW_NAME: "send-receipt",
        A.FLOW_TYPE: "custom",
        A.FRAMEWORK: "custom",
        A.FLOW_OUTCOME: "success",
    }


def test_thread_handed_the_request_context_that_finishes_inside_it_is_in_the_request(flows):
    """The same thread joined before the handler returns runs inside the live request: its flow is
    skipped as ``in_request`` and its context lands on the request span."""
    app = Flask(__name__)

    def work() -> None:
        with hud.sync_flow("inline-work"):
            hud.set_context(step="joined")

    @app.route("/sync")
    def sync() -> str:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,))
        worker.start()
        worker.join(5)
        return "done"

    client = instrumented(app, flows)
    try:
        assert client.get("/sync").status_code == 200
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert [view(s) for s in flows.spans()] == [
        {
            "name": "GET /sync",
            "kind": SpanKind.SERVER,
            "hud": {"hud.context.step": "joined"},
            "http.route": "/sync",
            "status": (StatusCode.UNSET, None),
            "parent": None,
            "links": [],
        }
    ]


def test_flows_outside_requests_are_untouched_by_the_instrumentation(flows):
    """The same app serving requests does not change a flow run outside any request (a CLI command or
    job in the same process): it is exported as a root flow with its metric."""
    app = Flask(__name__)

    @app.route("/ping")
    def ping() -> str:
        return "pong"

    client = instrumented(app, flows)
    try:
        assert client.get("/ping").data == b"pong"
        with hud.sync_flow("nightly-cleanup"):
            hud.set_context(removed=2)
        assert client.get("/ping").data == b"pong"
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    flow = flows.flow("nightly-cleanup")
    assert flows.skipped() == {}
    assert view(flow.span) == {
        "name": "nightly-cleanup",
        "kind": SpanKind.INTERNAL,
        "hud": {
            A.FLOW_NAME: "nightly-cleanup",
            A.FLOW_TYPE: "custom",
            A.FRAMEWORK: "custom",
            A.FLOW_OUTCOME: "success",
            "hud.context.removed": 2,
        },
        "http.route": None,
        "status": (StatusCode.UNSET, None),
        "parent": None,
        "links": [],
    }
    assert [s.name for s in flows.spans()] == ["GET /ping", "nightly-cleanup", "GET /ping"]
