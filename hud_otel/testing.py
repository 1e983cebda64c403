"""Test helpers for applications that use hud_otel: assert on flows without a backend.

With pytest, installing hud_otel makes the ``hud_flows`` fixture available (entry point ``pytest11``)::

    def test_nightly_report_is_a_flow(hud_flows):
        generate_nightly_report("2026-06-17")
        flow = hud_flows.flow("nightly-report")
        assert flow.outcome == "success"

Without pytest, :func:`capture_flows` does the same as a context manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import _attributes as A
from ._guard import reset_warnings
from ._register import register, shutdown
from ._state import STATE

__all__ = ["FinishedFlow", "HudFlows", "capture_flows", "hud_flows"]


@dataclass(frozen=True)
class FinishedFlow:
    """One finished flow, read back from its span."""

    name: str
    flow_type: str
    framework: str
    outcome: str
    error: Optional[str]
    duration_s: float
    context: dict[str, Any]
    message_count: Optional[int]
    enqueued_at: Optional[str]
    e2e_duration_ms: Optional[float]
    span: ReadableSpan = field(repr=False)

    @classmethod
    def from_span(cls, span: ReadableSpan) -> FinishedFlow:
        attrs = dict(span.attributes or {})
        prefix = A.CONTEXT_PREFIX
        return cls(
            name=str(attrs.get(A.FLOW_NAME, "")),
            flow_type=str(attrs.get(A.FLOW_TYPE, "")),
            framework=str(attrs.get(A.FRAMEWORK, "")),
            outcome=str(attrs.get(A.FLOW_OUTCOME, "")),
            error=attrs.get(A.FLOW_ERROR),  # type: ignore[arg-type]
            duration_s=((span.end_time or 0) - (span.start_time or 0)) / 1e9,
            context={k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)},
            message_count=attrs.get(A.QUEUE_MESSAGE_COUNT),  # type: ignore[arg-type]
            enqueued_at=attrs.get(A.QUEUE_ENQUEUED_AT),  # type: ignore[arg-type]
            e2e_duration_ms=attrs.get(A.QUEUE_E2E_DURATION_MS),  # type: ignore[arg-type]
            span=span,
        )


class HudFlows:
    """hud_otel registered against the SDK's in-memory span exporter and metric reader."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.metric_reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, flows and others, in the order they ended."""
        return list(self.span_exporter.get_finished_spans())

    def flows(self, name: Optional[str] = None) -> list[FinishedFlow]:
        """The finished flows (spans carrying ``hud.flow_type``), optionally only those named ``name``."""
        out = []
        for span in self.spans():
            attrs = span.attributes or {}
            if A.FLOW_TYPE in attrs and A.FLOW_DEMOTED_REASON not in attrs:
                flow = FinishedFlow.from_span(span)
                if name is None or flow.name == name:
                    out.append(flow)
        return out

    def flow(self, name: str) -> FinishedFlow:
        """The one finished flow named ``name``; AssertionError if there is not exactly one."""
        found = self.flows(name)
        assert len(found) == 1, f"expected one flow {name!r}, found {len(found)}: {self.flows()}"
        return found[0]

    def metric_points(self, metric_name: str) -> list[Any]:
        """The current data points of one hud_otel metric (collected now)."""
        data = self.metric_reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == metric_name:
                        points.extend(metric.data.data_points)
        return points

    def skipped(self) -> dict[str, int]:
        """``hud.flow.skipped`` by reason."""
        out: dict[str, int] = {}
        for point in self.metric_points(A.METRIC_SKIPPED):
            reason = str(point.attributes.get(A.SKIP_REASON))
            out[reason] = out.get(reason, 0) + int(point.value)
        return out

    def clear(self) -> None:
        """Forget the spans finished so far."""
        self.span_exporter.clear()


@contextmanager
def capture_flows(**register_kwargs: Any) -> Iterator[HudFlows]:
    """Register hud_otel against in-memory parts for the ``with`` block, then restore the state."""
    if STATE.runtime is not None:
        shutdown()
    reset_warnings()
    STATE.warned_unregistered = False
    capture = HudFlows()
    register(
        tracer_provider=capture.tracer_provider,
        meter_provider=capture.meter_provider,
        **register_kwargs,
    )
    try:
        yield capture
    finally:
        shutdown()
        capture.tracer_provider.shutdown()
        capture.meter_provider.shutdown()
        reset_warnings()
        STATE.warned_unregistered = False


try:
    import pytest
except ImportError:  # pragma: no cover - the fixture needs pytest, capture_flows does not
    pass
else:

    @pytest.fixture
    def hud_flows() -> Iterator[HudFlows]:
        """hud_otel registered for one test against in-memory parts; global state restored after."""
        with capture_flows() as capture:
            yield capture
