"""Celery with OpenTelemetry's Celery instrumentation: a consumer span counts as a request.

A real worker runs in a thread of the test process (``celery.contrib.testing.worker.start_worker``,
solo pool) on Celery's in-memory broker. The instrumentation makes a CONSUMER span ``run/<task>`` for
each task it executes, so a flow inside a task is part of that "request": skipped (``in_request``), its
context and failure written on the CONSUMER span. The PRODUCER span of a task sent from a flow is a
child of the flow carrying ``hud.flow.name``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel.testing import HudFlows, capture_flows

celery_app = Celery("hud_otel_tests", broker="memory://", backend="cache+memory://")
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=False,
    worker_hijack_root_logger=False,
    # The in-memory transport polls; its default interval of a second would dominate the tests.
    broker_transport_options={"polling_interval": 0.01},
)


@celery_app.task(name="tests.charge")
def charge(order: str) -> str:
    with hud.sync_flow("charge-card"):
        hud.set_context(order=order)
        if order.startswith("bad"):
            hud.set_failure("CardDeclined", reason="declined by issuer")
    return order


@celery_app.task(name="tests.ship")
def ship(order: str) -> str:
    # What users write for a queue consumer: a queue flow. Under Celery's own CONSUMER span it is
    # that span's business; the flow is skipped.
    with hud.sync_flow("shipments", flow_type=hud.FlowType.QUEUE, framework="celery", message_count=1):
        hud.set_context(order=order)
    return order


@pytest.fixture(scope="module")
def worker() -> Iterator[None]:
    """One Celery worker thread for the module; the logging set-up it changes is put back after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


@pytest.fixture
def flows(worker: None) -> Iterator[HudFlows]:
    """hud_otel on in-memory parts with the Celery instrumentation on for this test only."""
    with capture_flows() as capture:
        CeleryInstrumentor().instrument(tracer_provider=capture.tracer_provider)
        try:
            yield capture
        finally:
            CeleryInstrumentor().uninstrument()


def view(span: ReadableSpan) -> dict[str, Any]:
    attrs = dict(span.attributes or {})
    return {
        "name": span.name,
        "kind": span.kind,
        "hud": {k: v for k, v in attrs.items() if k.startswith("hud.") or k == A.ERROR_TYPE},
        "celery": {k: attrs.get(k) for k in ("celery.action", "celery.task_name", "celery.state")},
        "status": (span.status.status_code, span.status.description),
        "trace": span.context.trace_id,
        "parent": span.parent.span_id if span.parent else None,
        "links": [link.context.span_id for link in span.links],
    }


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_task_sent_from_a_flow_and_flow_inside_the_task(flows):
    """A task sent from a flow: the PRODUCER span is the flow's child with ``hud.flow.name``; in the
    worker the CONSUMER span continues the flow's trace and, being a request, makes the task's own flow
    skip (``in_request``) with its context and failure on the CONSUMER span."""
    with hud.sync_flow("checkout"):
        result = charge.delay("bad-1")
    assert result.get(timeout=10, interval=0.01) == "bad-1"

    spans = flows.spans()
    checkout = flows.flow("checkout").span
    producer = only(spans, "apply_async/tests.charge")
    consumer = only(spans, "run/tests.charge")
    trace_id = checkout.context.trace_id
    assert [f.name for f in flows.flows()] == ["checkout"]
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert view(producer) == {
        "name": "apply_async/tests.charge",
        "kind": SpanKind.PRODUCER,
        "hud": {A.FLOW_NAME: "checkout"},
        "celery": {"celery.action": "apply_async", "celery.task_name": "tests.charge", "celery.state": None},
        "status": (StatusCode.UNSET, None),
        "trace": trace_id,
        "parent": checkout.context.span_id,
        "links": [],
    }
    assert view(consumer) == {
        "name": "run/tests.charge",
        "kind": SpanKind.CONSUMER,
        "hud": {
            "hud.context.order": "bad-1",
            "hud.context.reason": "declined by issuer",
            A.FLOW_ERROR: "CardDeclined",
            A.ERROR_TYPE: "CardDeclined",
        },
        "celery": {"celery.action": "run", "celery.task_name": "tests.charge", "celery.state": "SUCCESS"},
        "status": (StatusCode.ERROR, "declined by issuer"),
        "trace": trace_id,
        "parent": producer.context.span_id,
        "links": [],
    }
    assert [dict(p.attributes)[A.FLOW_NAME] for p in flows.metric_points(A.METRIC_DURATION)] == ["checkout"]


def test_queue_flow_in_a_task_sent_outside_any_flow_is_skipped(flows):
    """A queue flow in a task sent from plain code: the CONSUMER span is a root-level request of its
    own trace, and the flow inside it is skipped (no flow metrics, no ``hud.flow.messages``)."""
    assert ship.delay("o-2").get(timeout=10, interval=0.01) == "o-2"

    spans = flows.spans()
    producer = only(spans, "apply_async/tests.ship")
    consumer = only(spans, "run/tests.ship")
    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 1}
    assert flows.metric_points(A.METRIC_DURATION) == []
    assert flows.metric_points(A.METRIC_MESSAGES) == []
    assert view(producer)["hud"] == {}
    assert view(consumer) == {
        "name": "run/tests.ship",
        "kind": SpanKind.CONSUMER,
        "hud": {"hud.context.order": "o-2"},
        "celery": {"celery.action": "run", "celery.task_name": "tests.ship", "celery.state": "SUCCESS"},
        "status": (StatusCode.UNSET, None),
        "trace": producer.context.trace_id,
        "parent": producer.context.span_id,
        "links": [],
    }
