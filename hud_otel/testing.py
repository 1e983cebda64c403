"""Assert on your flows in your own tests, without a backend.

Installing hud_otel makes the ``hud_flows`` pytest fixture available everywhere (it is a pytest plugin,
registered through the ``pytest11`` entry point); nothing needs to go in ``conftest.py``::

    import hud_otel as hud_sdk

    @hud_sdk.sync_flow("nightly-report")
    def generate_nightly_report(date):
        hud_sdk.set_context(date=date)

    def test_nightly_report_is_a_flow(hud_flows):
        generate_nightly_report("2026-06-17")
        flow = hud_flows.flow("nightly-report")
        assert flow.outcome == "success"
        assert flow.context == {"date": "2026-06-17"}

For the length of one test, the fixture registers hud_otel against the OpenTelemetry SDK's in-memory span
exporter and metric reader; afterwards it puts back whatever was there before (an earlier
``register()``, the warnings already given). Options go through a marker::

    @pytest.mark.hud_flows(max_flow_names=3)            # any register() keyword
    @pytest.mark.hud_flows(global_providers=True)       # also capture auto-instrumentation spans

Without pytest, :func:`capture_flows` does the same as a context manager::

    from hud_otel.testing import capture_flows

    with capture_flows() as flows:
        generate_nightly_report("2026-06-17")
    assert flows.flow("nightly-report").outcome == "success"
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import _attributes as A
from . import _guard
from ._register import register, shutdown
from ._state import STATE

__all__ = ["FinishedFlow", "HudFlows", "capture_flows", "hud_flows"]


@dataclass(frozen=True)
class FinishedFlow:
    """One finished flow as plain data, read back from its span.

    >>> flow = hud_flows.flow("orders")                              # doctest: +SKIP
    >>> (flow.flow_type, flow.framework, flow.outcome, flow.error)   # doctest: +SKIP
    ('queue', 'sqs', 'failure', 'PaymentDeclined')

    ``span`` is the OpenTelemetry ``ReadableSpan`` itself, for anything not copied out here.
    """

    name: str
    """The flow name (``hud.flow.name``)."""
    flow_type: str
    """``"custom"`` or ``"queue"``."""
    framework: str
    """The ``framework`` string the flow was given (``"custom"`` by default)."""
    outcome: str
    """``"success"``, ``"failure"`` or ``"cancelled"``."""
    error: Optional[str]
    """The error name of a failed flow: exception class, ``set_failure`` error or ``end_flow`` reason."""
    reason: Optional[str]
    """The span's status description on failure (``set_failure(..., reason=...)``, exception message)."""
    duration_s: float
    """How long the flow ran, in seconds."""
    context: dict[str, Any]
    """What ``set_context``/``set_failure`` attached, without the ``hud.context.`` prefix."""
    messaging_system: Optional[str]
    """Queue flows: the ``messaging.system`` the framework maps to (``"sqs"`` gives ``"aws_sqs"``)."""
    message_count: Optional[int]
    """Queue flows: the valid ``message_count`` the flow was given."""
    enqueued_at: Optional[datetime]
    """Queue flows: the valid ``enqueued_at`` the flow was given, in UTC."""
    e2e_duration_ms: Optional[float]
    """Queue flows with ``enqueued_at``: milliseconds from enqueue to the end of the flow."""
    span: ReadableSpan = field(repr=False, compare=False)
    """The finished OpenTelemetry span."""

    @property
    def attributes(self) -> dict[str, Any]:
        """Every attribute of the flow span, as a plain ``dict``."""
        return dict(self.span.attributes or {})

    @classmethod
    def from_span(cls, span: ReadableSpan) -> FinishedFlow:
        """Read a flow back from its finished span."""
        attrs = dict(span.attributes or {})
        prefix = A.CONTEXT_PREFIX
        enqueued = attrs.get(A.QUEUE_ENQUEUED_AT)
        error = attrs.get(A.FLOW_ERROR)
        description = span.status.description if error is not None else None
        return cls(
            name=str(attrs.get(A.FLOW_NAME, "")),
            flow_type=str(attrs.get(A.FLOW_TYPE, "")),
            framework=str(attrs.get(A.FRAMEWORK, "")),
            outcome=str(attrs.get(A.FLOW_OUTCOME, "")),
            error=None if error is None else str(error),
            reason=description,
            duration_s=((span.end_time or 0) - (span.start_time or 0)) / 1e9,
            context={k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)},
            messaging_system=_optional(attrs.get(A.MESSAGING_SYSTEM), str),
            message_count=_optional(attrs.get(A.QUEUE_MESSAGE_COUNT), int),
            # The wire form ends in "Z", which fromisoformat() reads only from Python 3.11 on.
            enqueued_at=(
                datetime.fromisoformat(enqueued.replace("Z", "+00:00")) if isinstance(enqueued, str) else None
            ),
            e2e_duration_ms=_optional(attrs.get(A.QUEUE_E2E_DURATION_MS), float),
            span=span,
        )


def _optional(value: Any, kind: Any) -> Any:
    return None if value is None else kind(value)


def _is_flow(span: ReadableSpan) -> bool:
    # A raw-API span that asked to be a flow but broke a rule is exported as an ordinary span.
    attrs = span.attributes or {}
    return A.FLOW_TYPE in attrs and A.FLOW_OUTCOME in attrs and A.FLOW_DEMOTED_REASON not in attrs


class HudFlows:
    """What one capture recorded: finished flows, every finished span, and hud_otel's metrics.

    Made by the ``hud_flows`` fixture and by :func:`capture_flows`::

        def test_orders(hud_flows):
            consume(queue)
            assert [f.outcome for f in hud_flows.flows("orders")] == ["success", "failure"]
            assert hud_flows.skipped() == {"nested": 1}
    """

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.metric_reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, flows and others, in the order they ended."""
        return list(self.span_exporter.get_finished_spans())

    def flows(self, name: Optional[str] = None, *, outcome: Optional[str] = None) -> list[FinishedFlow]:
        """The finished flows in the order they ended, optionally only those with ``name``/``outcome``.

        >>> [f.error for f in hud_flows.flows("orders", outcome="failure")]  # doctest: +SKIP
        ['PaymentDeclined']
        """
        out = []
        for span in self.spans():
            if _is_flow(span):
                flow = FinishedFlow.from_span(span)
                if (name is None or flow.name == name) and (outcome is None or flow.outcome == outcome):
                    out.append(flow)
        return out

    def flow(self, name: str) -> FinishedFlow:
        """The one finished flow named ``name``; ``AssertionError`` unless there is exactly one.

        >>> hud_flows.flow("nightly-report").outcome  # doctest: +SKIP
        'success'
        """
        found = self.flows(name)
        if len(found) != 1:
            seen = [f.name for f in self.flows()]
            raise AssertionError(
                f"expected one flow named {name!r}, found {len(found)}; finished flows: {seen}"
            )
        return found[0]

    def names(self) -> list[str]:
        """The distinct names of the finished flows, in the order they first ended."""
        return list(dict.fromkeys(f.name for f in self.flows()))

    def spans_in(self, flow: FinishedFlow) -> list[ReadableSpan]:
        """The spans started inside ``flow`` (its trace, without the flow span itself).

        >>> [s.name for s in hud_flows.spans_in(hud_flows.flow("orders"))]  # doctest: +SKIP
        ['SELECT orders']
        """
        ctx = flow.span.context
        if ctx is None:
            return []
        return [
            span
            for span in self.spans()
            if span.context is not None
            and span.context.trace_id == ctx.trace_id
            and span.context.span_id != ctx.span_id
        ]

    def metric_points(self, metric_name: str) -> list[Any]:
        """The data points of one metric, collected now (``"hud.flow.duration"``, ...)."""
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
        """How many flows were skipped, by reason (the ``hud.flow.skipped`` counter).

        >>> hud_flows.skipped()  # doctest: +SKIP
        {'nested': 1, 'in_request': 2}
        """
        out: dict[str, int] = {}
        for point in self.metric_points(A.METRIC_SKIPPED):
            reason = str(point.attributes.get(A.SKIP_REASON))
            out[reason] = out.get(reason, 0) + int(point.value)
        return out

    def clear(self) -> None:
        """Forget the spans finished so far (metrics are cumulative and stay)."""
        self.span_exporter.clear()

    def __repr__(self) -> str:
        return f"<HudFlows {len(self.spans())} spans, flows {self.names()}>"


@contextmanager
def capture_flows(*, global_providers: bool = False, **register_kwargs: Any) -> Iterator[HudFlows]:
    """Record flows in memory for the ``with`` block, then put hud_otel back as it was.

    ``register_kwargs`` go to :func:`hud_otel.register` (``max_flow_names=3``, say). An earlier
    ``register()`` of the process is set aside for the block and restored after it, and so are the
    one-time warnings already given, so that the block sees its own warnings. The capture is hermetic:
    ``HUD_OTEL_*``/``OTEL_*`` variables of the environment are ignored, so nothing is exported and no
    setting of the shell (``HUD_OTEL_DISABLED``, a sampler) changes what is recorded.

    With ``global_providers=True`` the in-memory providers are also made OpenTelemetry's global ones for
    the block (and the previous ones put back after), so that spans of auto-instrumentation that uses
    the global providers (an HTTP server span around a flow, say) are recorded and seen by the rules.
    OpenTelemetry has no public way to unset a global provider: this relies on its private module
    variables, which is fine for tests and nowhere else.

    >>> with capture_flows() as flows:           # doctest: +SKIP
    ...     generate_nightly_report("2026-06-17")
    >>> flows.flow("nightly-report").outcome     # doctest: +SKIP
    'success'
    """
    with _hermetic_environment():
        capture = HudFlows()
    saved_runtime = STATE.runtime
    saved_warned_unregistered = STATE.warned_unregistered
    with _guard._warned_lock:
        saved_warnings = set(_guard._warned)
    STATE.runtime = None
    _set_warnings(set())
    STATE.warned_unregistered = False
    saved_globals = _swap_global_providers(capture) if global_providers else None
    try:
        with _hermetic_environment():
            register(
                tracer_provider=capture.tracer_provider,
                meter_provider=capture.meter_provider,
                **register_kwargs,
            )
        yield capture
    finally:
        try:
            shutdown()
            capture.tracer_provider.shutdown()
            capture.meter_provider.shutdown()
        finally:
            if saved_globals is not None:
                _restore_global_providers(saved_globals)
            STATE.runtime = saved_runtime
            STATE.warned_unregistered = saved_warned_unregistered
            _set_warnings(saved_warnings)


# The switch of hud_otel's own test suite that re-raises internal errors; it changes no destination.
_KEPT_VARIABLES = frozenset({"HUD_OTEL_RAISE_INTERNAL"})


@contextmanager
def _hermetic_environment() -> Iterator[None]:
    """Hide ``HUD_OTEL_*`` and ``OTEL_*`` variables while the capture's providers are built and
    registered: a test must neither export to the endpoint of the shell it runs in nor be disabled,
    sampled or limited by it. They are read only then, and put back at once."""
    hidden = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(("HUD_OTEL_", "OTEL_")) and name not in _KEPT_VARIABLES
    }
    for name in hidden:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(hidden)


def _set_warnings(keys: set[object]) -> None:
    with _guard._warned_lock:
        _guard._warned.clear()
        _guard._warned.update(keys)


def _swap_global_providers(capture: HudFlows) -> tuple[Any, ...]:
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    saved = (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
    )
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    trace.set_tracer_provider(capture.tracer_provider)
    metrics_internal.set_meter_provider(capture.meter_provider)
    return saved


def _restore_global_providers(saved: tuple[Any, ...]) -> None:
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal

    (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
    ) = saved


try:
    import pytest
except ImportError:  # pragma: no cover - the fixture needs pytest, capture_flows does not
    pass
else:

    def pytest_configure(config: pytest.Config) -> None:
        """Declare the ``hud_flows`` marker, so ``--strict-markers`` accepts it."""
        config.addinivalue_line(
            "markers",
            "hud_flows(global_providers=False, **register_kwargs): options of the hud_flows fixture",
        )

    @pytest.fixture
    def hud_flows(request: pytest.FixtureRequest) -> Iterator[HudFlows]:
        """hud_otel registered for one test against in-memory parts; everything put back after.

        ::

            def test_cleanup_is_a_flow(hud_flows):
                run_cron_job()
                assert hud_flows.flow("cleanup-expired-sessions").outcome == "success"

        Options, from the closest ``@pytest.mark.hud_flows(...)``: ``global_providers=True`` and any
        keyword of :func:`hud_otel.register`.
        """
        marker = request.node.get_closest_marker("hud_flows")
        options = dict(marker.kwargs) if marker is not None else {}
        with capture_flows(**options) as capture:
            yield capture
