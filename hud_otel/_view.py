"""The two product views of flows, computed from received OTLP spans and metrics.

A :class:`FlowView` is fed :class:`~hud_otel._receiver.SpanRecord` and
:class:`~hud_otel._receiver.MetricRecord` batches (usually straight from an
:class:`~hud_otel._receiver.OtlpReceiver`) and keeps running aggregates with bounded memory:

- **Custom Flows**: one row per ``(flow, framework)`` of ``hud.flow_type="custom"``;
- **Queues**: one row per ``(flow, framework)`` of ``hud.flow_type="queue"``;
- **skipped**: the ``hud.flow.skipped`` counter, by ``reason``;
- per flow, its most recent invocations (the detail view).

A span without ``hud.flow_type`` (an ordinary span, or a child span inside a flow) is counted in
``totals.ignored_spans`` and otherwise ignored; a span carrying ``hud.flow.skipped_reason`` is a flow
that was demoted and is counted in ``totals.demoted_spans`` only.

JSON schema of :meth:`FlowView.snapshot` (``schema == "hud-otel.view/1"``); durations are
milliseconds rounded to the microsecond, percentiles interpolate linearly between the closest ranks
over the most recent ``samples_per_flow`` invocations, ``null`` when there is no sample::

    {
      "schema": "hud-otel.view/1",
      "custom_flows": [
        {"flow": str, "framework": str, "invocations": int, "failures": int, "cancelled": int,
         "error_rate": float,            # failures / invocations, 0.0..1.0
         "duration_ms": {"p50": float|null, "p95": float|null, "max": float|null},
         "top_errors": [{"error": str, "count": int}, ...]}      # most frequent first, at most 3
      ],
      "queues": [
        {"flow": str, "framework": str, "messaging_system": str|null,
         "invocations": int, "failures": int, "cancelled": int, "error_rate": float,
         "messages": int,                # sum of hud.queue.message_count, 1 when absent
         "processing_ms": {"p50", "p95", "max"},
         "queue_wait_ms": {"p50", "p95", "max"},   # from hud.queue.e2e_duration_ms
         "queue_wait_samples": int,
         "top_errors": [...]}
      ],
      "skipped": {reason: int},          # hud.flow.skipped, summed over processes
      "totals": {"spans": int, "flow_spans": int, "ignored_spans": int, "demoted_spans": int,
                 "untracked_flow_spans": int}    # flows beyond max_flows distinct keys
    }

:meth:`FlowView.detail` returns ``{"schema": "hud-otel.flow/1", "flow": str, "entries": [...]}``,
one entry per ``(flow_type, framework)`` with that flow name: ``{"flow_type", "framework",
"summary": <row as above>, "recent": [invocation, ...]}``, newest first, where an invocation is
``{"trace_id", "span_id", "start_time" (RFC 3339 UTC), "duration_ms", "outcome", "error",
"status_description", "context" ({key without "hud.context.": value}), "message_count",
"queue_wait_ms", "service"}``.

:meth:`FlowView.charts` returns what the web page draws, ``{"schema": "hud-otel.charts/1", "flow":
str, "entries": [...]}``, one entry per ``(flow_type, framework)``: ``{"flow_type", "framework",
"timeline": {"bucket_seconds": int, "buckets": [{"start": RFC 3339, "start_unix": int, "success":
int, "failure": int, "cancelled": int}, ...]}, "durations": histogram, "queue_waits": histogram or
null for custom flows}``. The timeline counts every invocation by its start second over the last
``timeline_seconds`` distinct seconds seen, in at most 60 buckets of a round width; a histogram is
``{"samples": int, "buckets": [{"low_ms": float, "high_ms": float|null, "count": int}, ...]}`` over
the same samples as the percentiles, on fixed 1-2-5 bounds, without empty buckets at either end.

Example::

    view = FlowView()
    view.attach(receiver)
    console.print(render_view(view.snapshot()))
"""

from __future__ import annotations

import bisect
import collections
import datetime as _dt
import math
import threading
from typing import (
    Any,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypedDict,
    Union,
)

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from hud_otel import _attributes as attrs
from hud_otel._receiver import AttrValue, MetricRecord, OtlpReceiver, SpanRecord

__all__ = [
    "VIEW_SCHEMA",
    "ChartsView",
    "CustomFlowRow",
    "DetailView",
    "FlowView",
    "Histogram",
    "Invocation",
    "QueueRow",
    "View",
    "build_view",
    "histogram",
    "percentile",
    "render_detail",
    "render_view",
]

VIEW_SCHEMA = "hud-otel.view/1"
DETAIL_SCHEMA = "hud-otel.flow/1"
CHARTS_SCHEMA = "hud-otel.charts/1"
_FLOW_TYPES = ("custom", "queue")
_MAX_ERRORS_PER_FLOW = 100
_OTHER_ERRORS = "(other)"
_OUTCOME_INDEX = {attrs.OUTCOME_SUCCESS: 0, attrs.OUTCOME_FAILURE: 1, attrs.OUTCOME_CANCELLED: 2}
_MAX_TIMELINE_BUCKETS = 60
# Round bucket widths, in seconds, so the buckets start on times a person reads easily.
_BUCKET_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
# Histogram bounds in milliseconds: 1-2-5 steps from 10 microseconds to about three hours.
# Written through their decimal text: 0.1 * 2 in binary is not quite the 0.2 a bound is meant to be.
_HISTOGRAM_BOUNDS_MS = tuple(float(f"{m}e{e}") for e in range(-2, 8) for m in (1, 2, 5) if m * 10**e <= 10**7)


class DurationStats(TypedDict):
    """Percentiles and maximum of a duration, in milliseconds."""

    p50: Optional[float]
    p95: Optional[float]
    max: Optional[float]


class ErrorCount(TypedDict):
    """How many invocations failed with this error name."""

    error: str
    count: int


class CustomFlowRow(TypedDict):
    """One row of the Custom Flows table."""

    flow: str
    framework: str
    invocations: int
    failures: int
    cancelled: int
    error_rate: float
    duration_ms: DurationStats
    top_errors: List[ErrorCount]


class QueueRow(TypedDict):
    """One row of the Queues table."""

    flow: str
    framework: str
    messaging_system: Optional[str]
    invocations: int
    failures: int
    cancelled: int
    error_rate: float
    messages: int
    processing_ms: DurationStats
    queue_wait_ms: DurationStats
    queue_wait_samples: int
    top_errors: List[ErrorCount]


class Totals(TypedDict):
    """What the view has seen, flows or not."""

    spans: int
    flow_spans: int
    ignored_spans: int
    demoted_spans: int
    untracked_flow_spans: int


class View(TypedDict):
    """The whole view: both tables, skipped counts and totals."""

    schema: str
    custom_flows: List[CustomFlowRow]
    queues: List[QueueRow]
    skipped: Dict[str, int]
    totals: Totals


class Invocation(TypedDict):
    """One recent invocation of a flow, for the detail view."""

    trace_id: str
    span_id: str
    start_time: str
    duration_ms: float
    outcome: str
    error: Optional[str]
    status_description: Optional[str]
    context: Dict[str, Any]
    message_count: Optional[int]
    queue_wait_ms: Optional[float]
    service: Optional[str]


class FlowDetail(TypedDict):
    """One ``(flow_type, framework)`` of a flow name, with its summary row and recent invocations."""

    flow_type: str
    framework: str
    summary: Union[CustomFlowRow, QueueRow]
    recent: List[Invocation]


class DetailView(TypedDict):
    """Everything known about one flow name."""

    schema: str
    flow: str
    entries: List[FlowDetail]


class TimelineBucket(TypedDict):
    """Invocations that started in ``[start_unix, start_unix + bucket_seconds)``, by outcome."""

    start: str
    start_unix: int
    success: int
    failure: int
    cancelled: int


class Timeline(TypedDict):
    """Invocations over time, in equal buckets."""

    bucket_seconds: int
    buckets: List[TimelineBucket]


class HistogramBucket(TypedDict):
    """How many samples fell in ``(low_ms, high_ms]``; ``high_ms`` is ``None`` for the last bucket."""

    low_ms: float
    high_ms: Optional[float]
    count: int


class Histogram(TypedDict):
    """A distribution of durations in milliseconds."""

    samples: int
    buckets: List[HistogramBucket]


class FlowCharts(TypedDict):
    """The chart data of one ``(flow_type, framework)`` of a flow name."""

    flow_type: str
    framework: str
    timeline: Timeline
    durations: Histogram
    queue_waits: Optional[Histogram]


class ChartsView(TypedDict):
    """The chart data of one flow name."""

    schema: str
    flow: str
    entries: List[FlowCharts]


def percentile(sorted_values: Sequence[float], q: float) -> Optional[float]:
    """The ``q``-th percentile (0-100) of already sorted values, interpolating linearly between the
    closest ranks (NumPy's default); ``None`` for no values.

    >>> percentile([10.0, 20.0, 30.0, 40.0], 50)
    25.0
    """
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def histogram(samples_ms: Iterable[float]) -> Histogram:
    """Count durations (milliseconds) into fixed 1-2-5 buckets, leaving out empty buckets at both
    ends (empty ones in between stay, so the shape is true).

    >>> [(b["low_ms"], b["high_ms"], b["count"]) for b in histogram([3.0, 4.0, 12.0])["buckets"]]
    [(2.0, 5.0, 2), (5.0, 10.0, 0), (10.0, 20.0, 1)]
    """
    bounds = _HISTOGRAM_BOUNDS_MS
    counts = [0] * (len(bounds) + 1)
    total = 0
    for value in samples_ms:
        counts[bisect.bisect_left(bounds, value)] += 1
        total += 1
    used = [i for i, count in enumerate(counts) if count]
    buckets: List[HistogramBucket] = []
    if used:
        for i in range(used[0], used[-1] + 1):
            low = 0.0 if i == 0 else bounds[i - 1]
            high = bounds[i] if i < len(bounds) else None
            buckets.append({"low_ms": low, "high_ms": high, "count": counts[i]})
    return {"samples": total, "buckets": buckets}


def _timeline(seconds: Mapping[int, List[int]]) -> Timeline:
    if not seconds:
        return {"bucket_seconds": 1, "buckets": []}
    first, last = min(seconds), max(seconds)
    width = _BUCKET_WIDTHS[-1]
    for candidate in _BUCKET_WIDTHS:
        if last // candidate - first // candidate < _MAX_TIMELINE_BUCKETS:
            width = candidate
            break
    start = first // width
    counts = [[0, 0, 0] for _ in range(last // width - start + 1)]
    for second, by_outcome in seconds.items():
        bucket = counts[second // width - start]
        for i in range(3):
            bucket[i] += by_outcome[i]
    return {
        "bucket_seconds": width,
        "buckets": [
            {
                "start": _rfc3339((start + i) * width * 1_000_000_000),
                "start_unix": (start + i) * width,
                "success": c[0],
                "failure": c[1],
                "cancelled": c[2],
            }
            for i, c in enumerate(counts)
        ],
    }


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def _stats(samples: Iterable[float], maximum: Optional[float]) -> DurationStats:
    ordered = sorted(samples)
    return {
        "p50": _ms(percentile(ordered, 50)),
        "p95": _ms(percentile(ordered, 95)),
        "max": _ms(maximum),
    }


def _str_attr(attributes: Mapping[str, AttrValue], key: str) -> Optional[str]:
    value = attributes.get(key)
    return value if isinstance(value, str) else None


def _int_attr(attributes: Mapping[str, AttrValue], key: str) -> Optional[int]:
    value = attributes.get(key)
    # bool is an int subclass, but a boolean count is a sender bug, not a number.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_attr(attributes: Mapping[str, AttrValue], key: str) -> Optional[float]:
    value = attributes.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _jsonable(value: AttrValue) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or infinity
    return value


def _rfc3339(unix_nano: int) -> str:
    moment = _dt.datetime.fromtimestamp(unix_nano / 1e9, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _FlowStats:
    """Running aggregates of one ``(flow_type, framework, flow)``."""

    def __init__(
        self, flow_type: str, framework: str, name: str, samples: int, recent: int, timeline_seconds: int
    ) -> None:
        self.flow_type = flow_type
        self.framework = framework
        self.name = name
        self.messaging_system: Optional[str] = None
        self.invocations = 0
        self.failures = 0
        self.cancelled = 0
        self.messages = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.durations_ms: Deque[float] = collections.deque(maxlen=samples)
        self.max_ms: Optional[float] = None
        self.waits_ms: Deque[float] = collections.deque(maxlen=samples)
        self.max_wait_ms: Optional[float] = None
        self.wait_samples = 0
        # (start time in ns, invocation): the string start time is too coarse to order by.
        self.recent: Deque[Tuple[int, Invocation]] = collections.deque(maxlen=recent)
        # Invocations by start second: [success, failure, cancelled]; the oldest seconds go first.
        self.seconds: Dict[int, List[int]] = {}
        self._timeline_seconds = timeline_seconds

    def add(self, span: SpanRecord) -> None:
        attributes = span.attributes
        outcome = _str_attr(attributes, attrs.FLOW_OUTCOME)
        if outcome not in (attrs.OUTCOME_SUCCESS, attrs.OUTCOME_FAILURE, attrs.OUTCOME_CANCELLED):
            # A sender without hud.flow.outcome still says what happened through the status.
            outcome = attrs.OUTCOME_FAILURE if span.status_code == "ERROR" else attrs.OUTCOME_SUCCESS
        error: Optional[str] = None
        if outcome == attrs.OUTCOME_FAILURE:
            error = (
                _str_attr(attributes, attrs.FLOW_ERROR)
                or _str_attr(attributes, attrs.ERROR_TYPE)
                or span.status_description
                or "error"
            )
        duration_ms = span.duration_ns / 1e6
        message_count = _int_attr(attributes, attrs.QUEUE_MESSAGE_COUNT)
        wait_ms = _float_attr(attributes, attrs.QUEUE_E2E_DURATION_MS)
        if wait_ms is not None and wait_ms < 0:
            wait_ms = None

        self.invocations += 1
        if outcome == attrs.OUTCOME_FAILURE and error is not None:
            self.failures += 1
            if error in self.errors or len(self.errors) < _MAX_ERRORS_PER_FLOW:
                self.errors[error] += 1
            else:
                self.errors[_OTHER_ERRORS] += 1  # bounded: free-form reasons could be unbounded
        elif outcome == attrs.OUTCOME_CANCELLED:
            self.cancelled += 1
        self.durations_ms.append(duration_ms)
        self.max_ms = duration_ms if self.max_ms is None else max(self.max_ms, duration_ms)
        if self.flow_type == "queue":
            self.messages += message_count if message_count is not None else 1
            self.messaging_system = _str_attr(attributes, attrs.MESSAGING_SYSTEM) or self.messaging_system
            if wait_ms is not None:
                self.waits_ms.append(wait_ms)
                self.wait_samples += 1
                self.max_wait_ms = wait_ms if self.max_wait_ms is None else max(self.max_wait_ms, wait_ms)

        invocation: Invocation = {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "start_time": _rfc3339(span.start_time_unix_nano),
            "duration_ms": round(duration_ms, 3),
            "outcome": outcome,
            "error": error,
            "status_description": span.status_description or None,
            "context": {
                key[len(attrs.CONTEXT_PREFIX) :]: _jsonable(value)
                for key, value in attributes.items()
                if key.startswith(attrs.CONTEXT_PREFIX)
            },
            "message_count": message_count,
            "queue_wait_ms": _ms(wait_ms),
            "service": _str_attr(span.resource, "service.name"),
        }
        self.recent.append((span.start_time_unix_nano, invocation))
        self._count_second(span.start_time_unix_nano // 1_000_000_000, outcome)

    def _count_second(self, second: int, outcome: str) -> None:
        counts = self.seconds.get(second)
        if counts is None:
            if len(self.seconds) >= self._timeline_seconds:
                oldest = min(self.seconds)
                if second < oldest:
                    return  # older than everything kept: it would be dropped at once
                # A tenth at a time, so a long-running flow does not pay a scan per new second.
                for old in sorted(self.seconds)[: max(1, self._timeline_seconds // 10)]:
                    del self.seconds[old]
            counts = self.seconds[second] = [0, 0, 0]
        counts[_OUTCOME_INDEX[outcome]] += 1

    def charts(self) -> FlowCharts:
        return {
            "flow_type": self.flow_type,
            "framework": self.framework,
            "timeline": _timeline(self.seconds),
            "durations": histogram(self.durations_ms),
            "queue_waits": histogram(self.waits_ms) if self.flow_type == "queue" else None,
        }

    def _top_errors(self, limit: int) -> List[ErrorCount]:
        # Ties broken by name so the output does not depend on arrival order.
        ranked = sorted(self.errors.items(), key=lambda item: (-item[1], item[0]))
        return [{"error": name, "count": count} for name, count in ranked[:limit]]

    def _error_rate(self) -> float:
        return round(self.failures / self.invocations, 6) if self.invocations else 0.0

    def custom_row(self, top_errors: int) -> CustomFlowRow:
        return {
            "flow": self.name,
            "framework": self.framework,
            "invocations": self.invocations,
            "failures": self.failures,
            "cancelled": self.cancelled,
            "error_rate": self._error_rate(),
            "duration_ms": _stats(self.durations_ms, self.max_ms),
            "top_errors": self._top_errors(top_errors),
        }

    def queue_row(self, top_errors: int) -> QueueRow:
        return {
            "flow": self.name,
            "framework": self.framework,
            "messaging_system": self.messaging_system,
            "invocations": self.invocations,
            "failures": self.failures,
            "cancelled": self.cancelled,
            "error_rate": self._error_rate(),
            "messages": self.messages,
            "processing_ms": _stats(self.durations_ms, self.max_ms),
            "queue_wait_ms": _stats(self.waits_ms, self.max_wait_ms),
            "queue_wait_samples": self.wait_samples,
            "top_errors": self._top_errors(top_errors),
        }


_FlowKey = Tuple[str, str, str]  # (flow_type, framework, name)
_SeriesKey = Tuple[Any, ...]


class FlowView:
    """Running Custom Flows / Queues aggregates over received spans and metrics; thread-safe.

    Memory is bounded: at most ``max_flows`` distinct flows (later ones are counted in
    ``totals.untracked_flow_spans``), ``samples_per_flow`` durations per flow for percentiles,
    ``recent_per_flow`` invocations per flow for the detail view, invocation counts for the last
    ``timeline_seconds`` distinct start seconds per flow for the charts.

    Example::

        view = FlowView()
        view.add_spans(receiver.spans())
        print(view.snapshot()["custom_flows"])
    """

    def __init__(
        self,
        *,
        max_flows: int = 10_000,
        samples_per_flow: int = 10_000,
        recent_per_flow: int = 50,
        top_errors: int = 3,
        timeline_seconds: int = 3600,
    ) -> None:
        self._lock = threading.Lock()
        self._timeline_seconds = timeline_seconds
        self._max_flows = max_flows
        self._samples = samples_per_flow
        self._recent = recent_per_flow
        self._top_errors = top_errors
        self._flows: Dict[_FlowKey, _FlowStats] = {}
        self._spans = 0
        self._flow_spans = 0
        self._ignored = 0
        self._demoted = 0
        self._untracked = 0
        # Cumulative series: the latest (time, value) per stream; delta series: a running sum.
        self._skipped_cumulative: Dict[_SeriesKey, Tuple[int, float]] = {}
        self._skipped_delta: Dict[str, float] = collections.defaultdict(float)

    def attach(self, receiver: OtlpReceiver) -> None:
        """Feed this view every batch the receiver accepts from now on."""
        receiver.add_listener(on_spans=self.add_spans, on_metrics=self.add_metrics)

    def add_spans(self, spans: Iterable[SpanRecord]) -> None:
        """Count these spans; non-flow spans are tallied and otherwise ignored."""
        with self._lock:
            for span in spans:
                self._add_span(span)

    def _add_span(self, span: SpanRecord) -> None:
        self._spans += 1
        attributes = span.attributes
        flow_type = _str_attr(attributes, attrs.FLOW_TYPE)
        if flow_type not in _FLOW_TYPES:
            self._ignored += 1
            return
        if attrs.FLOW_DEMOTED_REASON in attributes:
            self._demoted += 1
            return
        name = _str_attr(attributes, attrs.FLOW_NAME)
        if name is None:
            # A queue span is named "process <flow>"; only the attribute gives the flow itself.
            name = span.name
        framework = _str_attr(attributes, attrs.FRAMEWORK) or "custom"
        key = (flow_type, framework, name)
        stats = self._flows.get(key)
        if stats is None:
            if len(self._flows) >= self._max_flows:
                self._untracked += 1
                return
            stats = _FlowStats(
                flow_type, framework, name, self._samples, self._recent, self._timeline_seconds
            )
            self._flows[key] = stats
        self._flow_spans += 1
        stats.add(span)

    def add_metrics(self, metrics: Iterable[MetricRecord]) -> None:
        """Take the ``hud.flow.skipped`` counter from these records; other metrics are ignored."""
        with self._lock:
            for metric in metrics:
                if metric.name == attrs.METRIC_SKIPPED and metric.kind == "sum":
                    self._add_skipped(metric)

    def _add_skipped(self, metric: MetricRecord) -> None:
        resource_key = tuple(sorted((k, repr(v)) for k, v in metric.resource.items()))
        for point in metric.data_points:
            if point.value is None:
                continue
            reason = _str_attr(point.attributes, attrs.SKIP_REASON) or "unknown"
            if metric.temporality == "delta":
                self._skipped_delta[reason] += point.value
                continue
            # One cumulative stream per process and attribute set; its start time tells apart
            # two processes that happen to share a resource (a restarted job, say).
            point_key = tuple(sorted((k, repr(v)) for k, v in point.attributes.items()))
            key = (resource_key, metric.scope_name, point_key, point.start_time_unix_nano, reason)
            seen = self._skipped_cumulative.get(key)
            if seen is None or point.time_unix_nano >= seen[0]:
                self._skipped_cumulative[key] = (point.time_unix_nano, point.value)

    def _skipped(self) -> Dict[str, int]:
        totals: Dict[str, float] = collections.defaultdict(float)
        for key, (_, value) in self._skipped_cumulative.items():
            totals[key[-1]] += value
        for reason, value in self._skipped_delta.items():
            totals[reason] += value
        return {reason: int(totals[reason]) for reason in sorted(totals)}

    def snapshot(self) -> View:
        """The current view as JSON-able data (schema in the module docstring)."""
        with self._lock:
            ordered = sorted(self._flows.values(), key=lambda s: (s.name, s.framework))
            return {
                "schema": VIEW_SCHEMA,
                "custom_flows": [s.custom_row(self._top_errors) for s in ordered if s.flow_type == "custom"],
                "queues": [s.queue_row(self._top_errors) for s in ordered if s.flow_type == "queue"],
                "skipped": self._skipped(),
                "totals": {
                    "spans": self._spans,
                    "flow_spans": self._flow_spans,
                    "ignored_spans": self._ignored,
                    "demoted_spans": self._demoted,
                    "untracked_flow_spans": self._untracked,
                },
            }

    def detail(self, name: str) -> Optional[DetailView]:
        """The recent invocations of every flow named ``name``; ``None`` if there is none."""
        with self._lock:
            matches = sorted(
                (s for s in self._flows.values() if s.name == name),
                key=lambda s: (s.flow_type, s.framework),
            )
            if not matches:
                return None
            entries: List[FlowDetail] = []
            for stats in matches:
                summary: Union[CustomFlowRow, QueueRow] = (
                    stats.queue_row(self._top_errors)
                    if stats.flow_type == "queue"
                    else stats.custom_row(self._top_errors)
                )
                recent = [inv for _, inv in sorted(stats.recent, key=lambda r: -r[0])]
                entries.append(
                    {
                        "flow_type": stats.flow_type,
                        "framework": stats.framework,
                        "summary": summary,
                        "recent": recent,
                    }
                )
            return {"schema": DETAIL_SCHEMA, "flow": name, "entries": entries}

    def charts(self, name: str) -> Optional[ChartsView]:
        """What the web page charts for every flow named ``name``; ``None`` if there is none."""
        with self._lock:
            matches = sorted(
                (s for s in self._flows.values() if s.name == name),
                key=lambda s: (s.flow_type, s.framework),
            )
            if not matches:
                return None
            return {"schema": CHARTS_SCHEMA, "flow": name, "entries": [s.charts() for s in matches]}


def build_view(spans: Iterable[SpanRecord], metrics: Iterable[MetricRecord] = ()) -> View:
    """The view of these records, in one call.

    >>> build_view([])["custom_flows"]
    []
    """
    view = FlowView()
    view.add_spans(spans)
    view.add_metrics(metrics)
    return view.snapshot()


# --------------------------------------------------------------------------------------------------
# rich rendering


def _fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    if value >= 10:
        return f"{value:.1f}ms"
    return f"{value:.2f}ms"


def _table(title: str) -> Table:
    # A light frame: the tables have up to ten columns and must stay readable at 80 characters.
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
    )


def _number_columns(table: Table, names: Sequence[str]) -> None:
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)


def _fmt_rate(rate: float) -> Text:
    style = "red" if rate >= 0.05 else ("yellow" if rate > 0 else "green")
    return Text(f"{rate * 100:.1f}%", style=style)


def _fmt_errors(errors: Sequence[ErrorCount]) -> str:
    return ", ".join(f"{e['error']} x{e['count']}" for e in errors) or "-"


# Below this width the error names leave the flow rows for a table of their own, so that neither
# the flow names nor the errors get folded into unreadable slivers.
_WIDE = 120


def custom_flows_table(view: View, *, with_errors: bool = True) -> Table:
    """The Custom Flows table of a view."""
    table = _table("Custom Flows")
    table.add_column("Flow", style="bold cyan", overflow="fold", min_width=14)
    table.add_column("Frame-\nwork", overflow="fold")
    _number_columns(table, ("Invoca-\ntions", "Fail-\nures", "Error\nrate", "p50", "p95", "Max"))
    if with_errors:
        table.add_column("Top errors", overflow="fold")
    for row in view["custom_flows"]:
        stats = row["duration_ms"]
        cells: List[Union[str, Text]] = [
            row["flow"],
            row["framework"],
            str(row["invocations"]),
            str(row["failures"]),
            _fmt_rate(row["error_rate"]),
            _fmt_ms(stats["p50"]),
            _fmt_ms(stats["p95"]),
            _fmt_ms(stats["max"]),
        ]
        if with_errors:
            cells.append(_fmt_errors(row["top_errors"]))
        table.add_row(*cells)
    if not view["custom_flows"]:
        table.caption = "no custom flows received yet"
    return table


def queues_table(view: View, *, with_errors: bool = True) -> Table:
    """The Queues table of a view."""
    table = _table("Queues")
    table.add_column("Flow", style="bold cyan", overflow="fold", min_width=14)
    table.add_column("Frame-\nwork", overflow="fold")
    _number_columns(
        table,
        (
            "Invoca-\ntions",
            "Mes-\nsages",
            "Error\nrate",
            "p50\nproc",
            "p95\nproc",
            "p50\nwait",
            "p95\nwait",
        ),
    )
    if with_errors:
        table.add_column("Top errors", overflow="fold")
    for row in view["queues"]:
        proc, wait = row["processing_ms"], row["queue_wait_ms"]
        cells: List[Union[str, Text]] = [
            row["flow"],
            row["framework"],
            str(row["invocations"]),
            str(row["messages"]),
            _fmt_rate(row["error_rate"]),
            _fmt_ms(proc["p50"]),
            _fmt_ms(proc["p95"]),
            _fmt_ms(wait["p50"]),
            _fmt_ms(wait["p95"]),
        ]
        if with_errors:
            cells.append(_fmt_errors(row["top_errors"]))
        table.add_row(*cells)
    if not view["queues"]:
        table.caption = "no queue flows received yet"
    return table


def errors_table(view: View) -> Table:
    """The most frequent errors of every flow, one line each."""
    table = _table("Most frequent errors")
    table.add_column("Flow", style="bold cyan", overflow="fold")
    table.add_column("Type")
    table.add_column("Error", overflow="fold")
    table.add_column("Count", justify="right", no_wrap=True)
    rows: List[Tuple[str, str, List[ErrorCount]]] = [
        (r["flow"], "custom", r["top_errors"]) for r in view["custom_flows"]
    ]
    rows += [(r["flow"], "queue", r["top_errors"]) for r in view["queues"]]
    for flow, flow_type, errors in rows:
        for error in errors:
            table.add_row(flow, flow_type, error["error"], str(error["count"]))
    if not any(errors for _, _, errors in rows):
        table.caption = "none"
    return table


def skipped_table(view: View) -> Table:
    """The skipped flows by reason."""
    table = _table("Skipped flows")
    table.add_column("Reason")
    table.add_column("Count", justify="right")
    for reason, count in view["skipped"].items():
        table.add_row(reason, str(count))
    if not view["skipped"]:
        table.caption = "none"
    return table


class _ViewRenderable:
    """Lays the view out for the width it is finally printed at."""

    def __init__(self, view: View) -> None:
        self._view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        view = self._view
        wide = options.max_width >= _WIDE
        yield custom_flows_table(view, with_errors=wide)
        yield queues_table(view, with_errors=wide)
        if not wide:
            yield errors_table(view)
        yield skipped_table(view)
        totals = view["totals"]
        yield Text(
            f"{totals['flow_spans']} flow span(s), {totals['ignored_spans']} other span(s) "
            f"ignored, {totals['demoted_spans']} demoted",
            style="dim",
        )


def render_view(view: View) -> RenderableType:
    """Both tables, the errors, the skipped counts and a totals line, for ``console.print``.

    On a console narrower than 120 columns the most frequent errors move from the rows to a table
    of their own.
    """
    return _ViewRenderable(view)


def render_detail(detail: DetailView) -> RenderableType:
    """The recent invocations of one flow, one table per ``(flow_type, framework)``."""
    tables: List[RenderableType] = []
    for entry in detail["entries"]:
        summary = entry["summary"]
        table = _table(
            f"{detail['flow']} ({entry['flow_type']}, {entry['framework']}): "
            f"{summary['invocations']} invocation(s), {summary['failures']} failure(s)"
        )
        table.add_column("Start (UTC)")
        table.add_column("Outcome")
        table.add_column("Duration", justify="right")
        queue = entry["flow_type"] == "queue"
        if queue:
            table.add_column("Wait", justify="right")
            table.add_column("Msgs", justify="right")
        table.add_column("Error")
        table.add_column("Context")
        table.add_column("Trace id", style="dim", overflow="fold")
        for inv in entry["recent"]:
            outcome_style = {"failure": "red", "cancelled": "yellow"}.get(inv["outcome"], "green")
            error = inv["error"] or ""
            if inv["status_description"] and inv["status_description"] != error:
                error = f"{error}: {inv['status_description']}" if error else inv["status_description"]
            context = ", ".join(f"{k}={v!r}" for k, v in inv["context"].items())
            cells: List[Union[str, Text]] = [
                inv["start_time"][11:23],  # the time of day; the JSON has the full timestamp
                Text(inv["outcome"], style=outcome_style),
                _fmt_ms(inv["duration_ms"]),
            ]
            if queue:
                count = inv["message_count"]
                cells += [_fmt_ms(inv["queue_wait_ms"]), "-" if count is None else str(count)]
            cells += [error or "-", context or "-", inv["trace_id"]]
            table.add_row(*cells)
        tables.append(table)
    return Group(*tables)
