"""Spans marked as flows through the raw OpenTelemetry API (``hud.flow_type`` given at start).

The span processor holds them to the rules of the flow API: a nested, in-request, badly named or
over-cap one is exported as an ordinary span (``hud.flow.skipped_reason`` recorded, ``hud.flow_type``
removed) and counted in ``hud.flow.skipped``; one that obeys them is a flow whose metrics the processor
records when it ends, once, without counting hud_otel's own flows a second time.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel import _processor
from hud_otel.testing import HudFlows, capture_flows

CUSTOM = {A.FLOW_TYPE: "custom", A.FRAMEWORK: "custom"}


@pytest.fixture
def flows() -> Iterator[HudFlows]:
    with capture_flows() as capture:
        yield capture


def tracer(flows: HudFlows) -> trace.Tracer:
    """Another library's tracer on the same provider (not hud_otel's)."""
    return flows.tracer_provider.get_tracer("someone.else", "9.9")


def view(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "parent": span.parent.span_id if span.parent else None,
        "links": [link.context.span_id for link in span.links],
    }


def by_name(flows: HudFlows, name: str) -> ReadableSpan:
    found = [s for s in flows.spans() if s.name == name]
    assert len(found) == 1, [s.name for s in flows.spans()]
    return found[0]


def durations(flows: HudFlows) -> list[tuple[dict[str, Any], int]]:
    """``hud.flow.duration`` points as (attributes, count), sorted by flow name."""
    points = [(dict(p.attributes), p.count) for p in flows.metric_points(A.METRIC_DURATION)]
    return sorted(points, key=lambda item: str(item[0].get(A.FLOW_NAME)))


def test_raw_flow_that_obeys_the_rules_is_a_flow_and_its_metric_is_recorded_once(flows):
    """A root span another tracer marks as a flow is exported unchanged as a flow; spans inside it carry
    its name; ``hud.flow.duration`` gets one point from the processor. A hud_otel flow beside it is
    counted once too (the processor does not count it again)."""
    t = tracer(flows)
    with t.start_as_current_span("import-batch", attributes={**CUSTOM, A.FLOW_NAME: "import-batch"}):
        with t.start_as_current_span("parse"):
            pass
    with hud.sync_flow("own-flow"):
        pass

    raw = by_name(flows, "import-batch")
    assert [f.name for f in flows.flows()] == ["import-batch", "own-flow"]
    assert view(raw) == {
        "name": "import-batch",
        "kind": SpanKind.INTERNAL,
        "attributes": {**CUSTOM, A.FLOW_NAME: "import-batch", A.FLOW_OUTCOME: "success"},
        "status": (StatusCode.UNSET, None),
        "parent": None,
        "links": [],
    }
    assert view(by_name(flows, "parse")) == {
        "name": "parse",
        "kind": SpanKind.INTERNAL,
        "attributes": {A.FLOW_NAME: "import-batch"},
        "status": (StatusCode.UNSET, None),
        "parent": raw.context.span_id,
        "links": [],
    }
    assert flows.skipped() == {}
    assert durations(flows) == [
        ({A.FLOW_NAME: "import-batch", **CUSTOM, A.FLOW_OUTCOME: "success"}, 1),
        ({A.FLOW_NAME: "own-flow", **CUSTOM, A.FLOW_OUTCOME: "success"}, 1),
    ]


def test_raw_flow_without_name_or_framework_is_named_after_its_span(flows):
    """Only ``hud.flow_type`` given: the flow name is the span name and the framework ``custom``, both
    written on the span, and the outcome is added at its end, so that it reads like any other flow."""
    with tracer(flows).start_as_current_span("rebuild-index", attributes={A.FLOW_TYPE: "custom"}):
        pass
    assert view(by_name(flows, "rebuild-index"))["attributes"] == {
        A.FLOW_TYPE: "custom",
        A.FLOW_NAME: "rebuild-index",
        A.FRAMEWORK: "custom",
        A.FLOW_OUTCOME: "success",
    }
    assert durations(flows) == [({A.FLOW_NAME: "rebuild-index", **CUSTOM, A.FLOW_OUTCOME: "success"}, 1)]


def test_raw_flow_outcomes_come_from_its_status_and_attributes(flows):
    """The processor reads the outcome at the end (and writes it on the span when it is missing): ERROR
    status with ``error.type`` is a failure of that type; an escaping exception's class names it
    otherwise, as for hud_otel's own flows; ERROR with neither is ``_OTHER``; an explicit
    ``hud.flow.outcome`` wins."""
    t = tracer(flows)
    with t.start_as_current_span("charge", attributes=CUSTOM) as span:
        span.set_attribute(A.ERROR_TYPE, "CardDeclined")
        span.set_status(Status(StatusCode.ERROR, "declined"))
    with t.start_as_current_span("refund", attributes=CUSTOM) as span:
        span.set_status(Status(StatusCode.ERROR))
    with t.start_as_current_span("poll", attributes=CUSTOM) as span:
        span.set_attribute(A.FLOW_OUTCOME, "cancelled")
    with pytest.raises(ValueError), t.start_as_current_span("parse", attributes=CUSTOM):
        raise ValueError("bad row")

    assert {f.name: f.outcome for f in flows.flows()} == {
        "charge": "failure",
        "refund": "failure",
        "poll": "cancelled",
        "parse": "failure",
    }
    assert durations(flows) == [
        ({A.FLOW_NAME: "charge", **CUSTOM, A.FLOW_OUTCOME: "failure", A.ERROR_TYPE: "CardDeclined"}, 1),
        ({A.FLOW_NAME: "parse", **CUSTOM, A.FLOW_OUTCOME: "failure", A.ERROR_TYPE: "ValueError"}, 1),
        ({A.FLOW_NAME: "poll", **CUSTOM, A.FLOW_OUTCOME: "cancelled"}, 1),
        ({A.FLOW_NAME: "refund", **CUSTOM, A.FLOW_OUTCOME: "failure", A.ERROR_TYPE: "_OTHER"}, 1),
    ]


def test_raw_queue_flow_records_message_and_end_to_end_metrics(flows):
    """A raw CONSUMER span marked as a queue flow with ``hud.queue.message_count`` and
    ``hud.queue.e2e_duration_ms`` feeds ``hud.flow.messages`` and ``hud.flow.e2e_duration``; it is a
    flow, not a request, so a hud_otel flow inside it is nested."""
    attrs = {
        A.FLOW_TYPE: "queue",
        A.FRAMEWORK: "kafka",
        A.FLOW_NAME: "orders",
        A.QUEUE_MESSAGE_COUNT: 5,
        A.QUEUE_E2E_DURATION_MS: 1500.0,
    }
    with tracer(flows).start_as_current_span("process orders", kind=SpanKind.CONSUMER, attributes=attrs):
        with hud.sync_flow("inner"):
            hud.set_context(batch="b-1")

    base = {A.FLOW_NAME: "orders", A.FLOW_TYPE: "queue", A.FRAMEWORK: "kafka"}
    assert view(by_name(flows, "process orders"))["attributes"] == {
        **attrs,
        "hud.context.batch": "b-1",
        A.FLOW_OUTCOME: "success",
    }
    assert flows.skipped() == {A.REASON_NESTED: 1}
    assert durations(flows) == [({**base, A.FLOW_OUTCOME: "success"}, 1)]
    [messages] = flows.metric_points(A.METRIC_MESSAGES)
    assert (dict(messages.attributes), messages.value) == (base, 5)
    [e2e] = flows.metric_points(A.METRIC_E2E_DURATION)
    assert (dict(e2e.attributes), e2e.count, e2e.sum) == (base, 1, 1.5)


def test_raw_flow_inside_a_hud_flow_is_demoted_to_an_ordinary_span(flows):
    """Nested in a hud_otel flow: exported as an ordinary child span with the reason, without
    ``hud.flow_type``, carrying the parent flow's name (it is part of it); counted ``nested``; its own
    children carry the parent's name too; the flow metrics count only the parent."""
    t = tracer(flows)
    with hud.sync_flow("nightly"):
        with (
            t.start_as_current_span("step", attributes={**CUSTOM, A.FLOW_NAME: "step", "rows": 3}),
            t.start_as_current_span("write"),
        ):
            pass

    nightly = flows.flow("nightly").span
    step = by_name(flows, "step")
    assert [f.name for f in flows.flows()] == ["nightly"]
    assert view(step) == {
        "name": "step",
        "kind": SpanKind.INTERNAL,
        "attributes": {
            A.FRAMEWORK: "custom",
            A.FLOW_NAME: "nightly",
            "rows": 3,
            A.FLOW_DEMOTED_REASON: A.REASON_NESTED,
        },
        "status": (StatusCode.UNSET, None),
        "parent": nightly.context.span_id,
        "links": [],
    }
    assert view(by_name(flows, "write"))["attributes"] == {A.FLOW_NAME: "nightly"}
    assert flows.skipped() == {A.REASON_NESTED: 1}
    assert durations(flows) == [({A.FLOW_NAME: "nightly", **CUSTOM, A.FLOW_OUTCOME: "success"}, 1)]


def test_raw_flow_inside_a_raw_flow_is_demoted(flows):
    """Two spans of another tracer, both marked as flows, one inside the other: the outer is the flow,
    the inner an ordinary span of it."""
    t = tracer(flows)
    with (
        t.start_as_current_span("outer", attributes=CUSTOM),
        t.start_as_current_span("inner", attributes=CUSTOM),
    ):
        pass
    assert [f.name for f in flows.flows()] == ["outer"]
    assert view(by_name(flows, "inner"))["attributes"] == {
        A.FRAMEWORK: "custom",
        A.FLOW_NAME: "outer",
        A.FLOW_DEMOTED_REASON: A.REASON_NESTED,
    }
    assert flows.skipped() == {A.REASON_NESTED: 1}
    assert [a[A.FLOW_NAME] for a, _ in durations(flows)] == ["outer"]


def test_raw_flow_with_an_explicit_root_context_inside_a_flow_is_still_nested(flows):
    """``context=Context()`` makes the span a root, but the code still runs inside a flow: nested."""
    with hud.sync_flow("job"):
        span = tracer(flows).start_span("detached", context=otel_context.Context(), attributes=CUSTOM)
        span.end()
    detached = by_name(flows, "detached")
    assert detached.parent is None
    assert view(detached)["attributes"] == {
        A.FRAMEWORK: "custom",
        A.FLOW_NAME: "job",
        A.FLOW_DEMOTED_REASON: A.REASON_NESTED,
    }
    assert flows.skipped() == {A.REASON_NESTED: 1}


def test_hud_flow_inside_a_raw_flow_is_skipped_and_writes_on_the_raw_span(flows):
    """The flow API defers to a raw flow as to its own: the inner hud_otel flow is skipped (``nested``),
    its ``set_context``/``set_failure`` land on the raw span, and the raw flow's metric is a failure."""
    with tracer(flows).start_as_current_span("sync-users", attributes=CUSTOM):
        with hud.sync_flow("inner"):
            hud.set_context(users=12)
            hud.set_failure("Timeout", reason="directory timed out")

    assert view(by_name(flows, "sync-users")) == {
        "name": "sync-users",
        "kind": SpanKind.INTERNAL,
        "attributes": {
            **CUSTOM,
            A.FLOW_NAME: "sync-users",
            "hud.context.users": 12,
            "hud.context.reason": "directory timed out",
            A.FLOW_ERROR: "Timeout",
            A.ERROR_TYPE: "Timeout",
            A.FLOW_OUTCOME: "failure",
        },
        "status": (StatusCode.ERROR, "directory timed out"),
        "parent": None,
        "links": [],
    }
    assert flows.skipped() == {A.REASON_NESTED: 1}
    assert durations(flows) == [
        ({A.FLOW_NAME: "sync-users", **CUSTOM, A.FLOW_OUTCOME: "failure", A.ERROR_TYPE: "Timeout"}, 1)
    ]


def test_raw_flows_in_a_request_are_demoted_even_under_internal_spans(flows):
    """A SERVER span of any tracer is a request: a raw flow directly in it, a raw queue flow (CONSUMER)
    under an INTERNAL span in it, are ordinary spans with reason ``in_request`` and no flow name."""
    t = tracer(flows)
    with t.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        with t.start_as_current_span("load", attributes={**CUSTOM, A.FLOW_NAME: "load"}):
            pass
        with (
            t.start_as_current_span("handler"),
            t.start_as_current_span(
                "process q", kind=SpanKind.CONSUMER, attributes={A.FLOW_TYPE: "queue", A.FRAMEWORK: "sqs"}
            ),
        ):
            with hud.sync_flow("deep"):
                hud.set_context(where="request")

    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_IN_REQUEST: 3}
    assert durations(flows) == []
    assert view(by_name(flows, "load"))["attributes"] == {
        A.FRAMEWORK: "custom",
        A.FLOW_DEMOTED_REASON: A.REASON_IN_REQUEST,
    }
    assert view(by_name(flows, "process q"))["attributes"] == {
        A.FRAMEWORK: "sqs",
        A.FLOW_DEMOTED_REASON: A.REASON_IN_REQUEST,
    }
    # The demoted CONSUMER span belongs to the request it runs in; it is not a request of its own.
    assert view(by_name(flows, "GET /orders"))["attributes"] == {"hud.context.where": "request"}


def test_name_cap_covers_raw_and_hud_flows_alike():
    """With ``max_flow_names=2`` shared by both APIs: a hud_otel flow and a raw flow take the two
    places; a third raw name is demoted (``name_cap``), a third hud_otel name skipped; names already
    seen keep working."""
    with capture_flows(max_flow_names=2) as flows:
        t = tracer(flows)
        with hud.sync_flow("a"):
            pass
        with t.start_as_current_span("b", attributes=CUSTOM):
            pass
        with t.start_as_current_span("c", attributes={**CUSTOM, "k": 1}):
            pass
        with hud.sync_flow("d"):
            pass
        with t.start_as_current_span("b", attributes=CUSTOM):
            pass

        assert [f.name for f in flows.flows()] == ["a", "b", "b"]
        assert view(by_name(flows, "c")) == {
            "name": "c",
            "kind": SpanKind.INTERNAL,
            "attributes": {A.FRAMEWORK: "custom", "k": 1, A.FLOW_DEMOTED_REASON: A.REASON_NAME_CAP},
            "status": (StatusCode.UNSET, None),
            "parent": None,
            "links": [],
        }
        assert flows.skipped() == {A.REASON_NAME_CAP: 2}
        assert [(a[A.FLOW_NAME], n) for a, n in durations(flows)] == [("a", 1), ("b", 2)]


@pytest.mark.parametrize(
    ("attributes", "shown"),
    [
        ({A.FLOW_TYPE: "custom", A.FLOW_NAME: "   "}, "'   '"),
        ({A.FLOW_TYPE: "custom", A.FLOW_NAME: "x" * 257}, "'xxx"),
        ({A.FLOW_TYPE: "batch", A.FLOW_NAME: "ok-name"}, "'batch'"),
        ({A.FLOW_TYPE: "custom", A.FRAMEWORK: ""}, "''"),
        ({A.FLOW_TYPE: "custom", A.FLOW_NAME: 7}, "7"),
    ],
)
def test_badly_named_raw_flow_is_demoted_with_one_warning(flows, caplog, attributes, shown):
    """A blank or over-long name, an unknown flow type, a blank framework or a non-string name: demoted
    with ``invalid_name``, counted, one warning naming the values."""
    t = tracer(flows)
    for _ in range(2):
        with t.start_as_current_span("span", attributes=attributes):
            pass
    assert flows.flows() == []
    assert flows.skipped() == {A.REASON_INVALID_NAME: 2}
    for span in flows.spans():
        attrs = dict(span.attributes or {})
        assert attrs[A.FLOW_DEMOTED_REASON] == A.REASON_INVALID_NAME
        assert A.FLOW_TYPE not in attrs and A.FLOW_NAME not in attrs
    warnings = [r.getMessage() for r in caplog.records if "marked as a flow" in r.getMessage()]
    assert len(warnings) == 1 and shown in warnings[0]


def test_raw_flow_in_a_thread_that_outlived_its_request_is_a_flow(flows):
    """The request span has ended when the thread it was handed to starts a raw flow: the rule is the
    flow API's (no longer in the request), so it is a flow; the processor cannot re-parent it, so it
    stays a child of the ended request span, in the request's trace."""
    t = tracer(flows)
    released = threading.Event()
    workers: list[threading.Thread] = []

    def later() -> None:
        released.wait(5)
        with t.start_as_current_span("send-report", attributes=CUSTOM):
            pass

    with t.start_as_current_span("POST /report", kind=SpanKind.SERVER):
        worker = threading.Thread(target=contextvars.copy_context().run, args=(later,))
        workers.append(worker)
        worker.start()
    released.set()
    workers[0].join(5)

    request = by_name(flows, "POST /report")
    report = flows.flow("send-report").span
    assert report.parent is not None and report.parent.span_id == request.context.span_id
    assert flows.skipped() == {}
    assert [a[A.FLOW_NAME] for a, _ in durations(flows)] == ["send-report"]


def test_without_the_on_ending_hook_entries_end_through_on_end(flows, monkeypatch):
    """On SDKs that hand only a read-only copy to ``on_end`` (no ``_on_ending``), open requests and raw
    flows are found by span id: a request that ended no longer holds flows back, and a raw flow's metric
    is still recorded."""
    monkeypatch.setattr(_processor, "_HAS_ON_ENDING", False)
    monkeypatch.setattr(_processor.HudSpanProcessor, "_on_ending", lambda self, span: None)
    t = tracer(flows)
    with t.start_as_current_span("raw", attributes=CUSTOM):
        pass
    request = t.start_span("GET /", kind=SpanKind.SERVER)
    token = otel_context.attach(trace.set_span_in_context(request))
    request.end()
    with hud.sync_flow("after"):
        pass
    otel_context.detach(token)

    after = flows.flow("after").span
    assert [link.context for link in after.links] == [request.get_span_context()]
    assert flows.skipped() == {}
    assert [a[A.FLOW_NAME] for a, _ in durations(flows)] == ["after", "raw"]
    assert flows.tracer_provider._active_span_processor._span_processors[-1]._open == {}


def test_flow_name_on_child_spans_respects_the_providers_span_limits():
    """Spans inside a flow get ``hud.flow.name`` within the provider's limits: truncated to the value
    length limit, and evicting the oldest attribute when the span is full, as ``set_attribute`` does."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_span_attribute_length=5))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hud.register(tracer_provider=provider, meter_provider=meter_provider)
    try:
        t = provider.get_tracer("app")
        with hud.sync_flow("nightly"):
            t.start_span("short").end()
            t.start_span("full", attributes={"a": 1, "b": 2}).end()
    finally:
        hud.shutdown()
    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert spans["short"] == {A.FLOW_NAME: "night"}
    assert spans["full"] == {"b": 2, A.FLOW_NAME: "night"}


def test_a_hud_flow_whose_span_the_user_ended_early_is_still_counted_once(flows):
    """The processor leaves hud_otel's own flows to the flow API: a flow whose span the user's code ends
    by hand still gets exactly one ``hud.flow.duration`` point when the flow itself ends."""
    with hud.sync_flow("ended-early"):
        trace.get_current_span().end()
    assert durations(flows) == [({A.FLOW_NAME: "ended-early", **CUSTOM, A.FLOW_OUTCOME: "success"}, 1)]


def test_processor_added_by_hand_without_register_applies_the_rules_and_records_nothing():
    """``HudSpanProcessor`` on a provider without ``register()``: raw flows still obey nesting (the
    nested one is demoted) and spans inside a flow carry its name; nothing is counted (no metrics
    before ``register()``) and nothing fails."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(_processor.HudSpanProcessor())
    t = provider.get_tracer("app")
    with (
        t.start_as_current_span("outer", attributes=CUSTOM),
        t.start_as_current_span("inner", attributes=CUSTOM),
    ):
        t.start_span("leaf").end()
    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert spans == {
        "leaf": {A.FLOW_NAME: "outer"},
        "inner": {A.FRAMEWORK: "custom", A.FLOW_NAME: "outer", A.FLOW_DEMOTED_REASON: A.REASON_NESTED},
        "outer": {**CUSTOM, A.FLOW_NAME: "outer", A.FLOW_OUTCOME: "success"},
    }
