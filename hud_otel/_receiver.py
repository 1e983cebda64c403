"""A local OTLP receiver: gRPC and HTTP/protobuf (and HTTP/JSON) for traces and metrics.

It accepts what any OpenTelemetry SDK exports, decodes it into plain Python records and keeps
them in a bounded, thread-safe store. It backs ``hud-otel serve`` and ``hud-otel demo``, and it is
the loopback backend of the project's own export tests, so it also records every request's headers
and can be told to fail or slow down on purpose.

Example::

    with OtlpReceiver() as rx:  # free loopback ports
        exporter = OTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True)
        ...
        spans = rx.wait_for_spans(3, timeout=5)
        assert rx.requests()[-1].headers["x-api-key"] == "secret"
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import socket
import threading
import time
import urllib.parse
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "AttrValue",
    "DataPoint",
    "MetricRecord",
    "OtlpReceiver",
    "RequestRecord",
    "SpanEvent",
    "SpanLink",
    "SpanRecord",
]

_log = logging.getLogger("hud_otel.receiver")

AttrValue = Union[str, bool, int, float, bytes, None, "List[AttrValue]", "Dict[str, AttrValue]"]
"""An OTLP ``AnyValue`` as Python: arrays become lists, key-value lists become dicts."""

SpansListener = Callable[[Sequence["SpanRecord"]], None]
MetricsListener = Callable[[Sequence["MetricRecord"]], None]
JsonRoute = Callable[[str], Optional[object]]

_TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_MAX_BODY_BYTES = 32 * 1024 * 1024

# OTLP/HTTP answers a failure with the HTTP status that carries the same retry meaning as the gRPC
# code (see the OTLP specification, "Failures" and "Retryable Response Codes").
_HTTP_STATUS_FOR_CODE: Dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# --------------------------------------------------------------------------------------------------
# Records


_Record = TypeVar("_Record")


@dataclass(frozen=True)
class SpanEvent:
    """One span event (for example the ``exception`` event of a failed flow)."""

    name: str
    time_unix_nano: int
    attributes: Dict[str, AttrValue]


@dataclass(frozen=True)
class SpanLink:
    """One span link; ids are lowercase hex."""

    trace_id: str
    span_id: str
    attributes: Dict[str, AttrValue]
    trace_state: str = ""


@dataclass(frozen=True)
class SpanRecord:
    """One received span. Ids are lowercase hex; kind and status are the OTel names (``"INTERNAL"``,
    ``"ERROR"``); ``protocol`` is ``"grpc"`` or ``"http"``."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: Optional[str]
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: Dict[str, AttrValue]
    status_code: str
    status_description: str
    events: Tuple[SpanEvent, ...]
    links: Tuple[SpanLink, ...]
    resource: Dict[str, AttrValue]
    scope_name: str
    scope_version: str
    trace_state: str = ""
    protocol: str = ""

    @property
    def duration_ns(self) -> int:
        """End minus start, never negative."""
        return max(0, self.end_time_unix_nano - self.start_time_unix_nano)

    @property
    def is_root(self) -> bool:
        """True when the span has no parent."""
        return self.parent_span_id is None


@dataclass(frozen=True)
class DataPoint:
    """One metric data point. Sums and gauges fill ``value``; histograms fill ``count``, ``sum``,
    ``min``, ``max``, ``bucket_counts`` and ``explicit_bounds``; summaries fill ``quantiles``."""

    attributes: Dict[str, AttrValue]
    start_time_unix_nano: int
    time_unix_nano: int
    value: Union[int, float, None] = None
    count: Optional[int] = None
    sum: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    bucket_counts: Tuple[int, ...] = ()
    explicit_bounds: Tuple[float, ...] = ()
    quantiles: Tuple[Tuple[float, float], ...] = ()


@dataclass(frozen=True)
class MetricRecord:
    """One received metric with its points.

    ``kind`` is ``"sum"``, ``"gauge"``, ``"histogram"``, ``"exponential_histogram"`` or
    ``"summary"``; ``temporality`` is ``"cumulative"``, ``"delta"`` or ``None`` where OTLP has no
    temporality (gauges, summaries).
    """

    name: str
    description: str
    unit: str
    kind: str
    temporality: Optional[str]
    is_monotonic: Optional[bool]
    data_points: Tuple[DataPoint, ...]
    resource: Dict[str, AttrValue]
    scope_name: str
    scope_version: str
    protocol: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """One export request as it arrived.

    ``signal`` is ``"traces"`` or ``"metrics"``; ``headers`` has lowercase names (gRPC metadata for
    gRPC); ``status`` is the gRPC status code name of the answer (``"OK"``, ``"INVALID_ARGUMENT"``,
    ``"UNAVAILABLE"``...), also for HTTP, where ``http_status`` holds the HTTP code.
    ``items`` counts accepted spans or metric data points, ``rejected`` the invalid ones.
    """

    protocol: str
    signal: str
    headers: Dict[str, str]
    status: str
    http_status: Optional[int] = None
    items: int = 0
    rejected: int = 0
    error: Optional[str] = None
    received_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """True when the request was answered with success (possibly partial)."""
        return self.status == "OK"


# --------------------------------------------------------------------------------------------------
# Decoding protobuf messages into records


def _any_value(value: common_pb2.AnyValue) -> AttrValue:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return value.bytes_value
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> Dict[str, AttrValue]:
    return {kv.key: _any_value(kv.value) for kv in pairs}


def _enum_suffix(full_name: str, prefix: str) -> str:
    return full_name[len(prefix) :] if full_name.startswith(prefix) else full_name


def _span_kind(kind: int) -> str:
    try:
        name = trace_pb2.Span.SpanKind.Name(kind)
    except ValueError:
        return "UNSPECIFIED"
    return _enum_suffix(name, "SPAN_KIND_")


def _status_code(code: int) -> str:
    try:
        name = trace_pb2.Status.StatusCode.Name(code)
    except ValueError:
        return "UNSET"
    return _enum_suffix(name, "STATUS_CODE_")


def _valid_id(raw: bytes, size: int) -> bool:
    return len(raw) == size and any(raw)


def _decode_spans(
    request: trace_service_pb2.ExportTraceServiceRequest, protocol: str
) -> Tuple[List[SpanRecord], int, Optional[str]]:
    """Return the decodable spans, how many were rejected and why (OTLP partial success)."""
    spans: List[SpanRecord] = []
    rejected = 0
    reason: Optional[str] = None
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                # A span without a usable identity cannot be placed in any trace; OTLP lets the
                # receiver reject it alone and accept the rest of the batch.
                parent = span.parent_span_id
                if (
                    not _valid_id(span.trace_id, 16)
                    or not _valid_id(span.span_id, 8)
                    or (parent and len(parent) != 8)
                ):
                    rejected += 1
                    reason = "span with an invalid trace_id, span_id or parent_span_id"
                    continue
                spans.append(
                    SpanRecord(
                        name=span.name,
                        kind=_span_kind(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=parent.hex() if _valid_id(parent, 8) else None,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        status_code=_status_code(span.status.code),
                        status_description=span.status.message,
                        events=tuple(
                            SpanEvent(e.name, e.time_unix_nano, _attributes(e.attributes))
                            for e in span.events
                        ),
                        links=tuple(
                            SpanLink(
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                _attributes(link.attributes),
                                link.trace_state,
                            )
                            for link in span.links
                        ),
                        resource=dict(resource),
                        scope_name=scope.name,
                        scope_version=scope.version,
                        trace_state=span.trace_state,
                        protocol=protocol,
                    )
                )
    return spans, rejected, reason


def _temporality(value: int) -> Optional[str]:
    if value == metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE:
        return "cumulative"
    if value == metrics_pb2.AGGREGATION_TEMPORALITY_DELTA:
        return "delta"
    return None


def _number_point(point: metrics_pb2.NumberDataPoint) -> DataPoint:
    which = point.WhichOneof("value")
    value: Union[int, float, None]
    if which == "as_int":
        value = point.as_int
    elif which == "as_double":
        value = point.as_double
    else:
        value = None
    return DataPoint(
        attributes=_attributes(point.attributes),
        start_time_unix_nano=point.start_time_unix_nano,
        time_unix_nano=point.time_unix_nano,
        value=value,
    )


def _histogram_point(point: metrics_pb2.HistogramDataPoint) -> DataPoint:
    return DataPoint(
        attributes=_attributes(point.attributes),
        start_time_unix_nano=point.start_time_unix_nano,
        time_unix_nano=point.time_unix_nano,
        count=point.count,
        sum=point.sum if point.HasField("sum") else None,
        min=point.min if point.HasField("min") else None,
        max=point.max if point.HasField("max") else None,
        bucket_counts=tuple(point.bucket_counts),
        explicit_bounds=tuple(point.explicit_bounds),
    )


def _exponential_point(point: metrics_pb2.ExponentialHistogramDataPoint) -> DataPoint:
    return DataPoint(
        attributes=_attributes(point.attributes),
        start_time_unix_nano=point.start_time_unix_nano,
        time_unix_nano=point.time_unix_nano,
        count=point.count,
        sum=point.sum if point.HasField("sum") else None,
        min=point.min if point.HasField("min") else None,
        max=point.max if point.HasField("max") else None,
    )


def _summary_point(point: metrics_pb2.SummaryDataPoint) -> DataPoint:
    return DataPoint(
        attributes=_attributes(point.attributes),
        start_time_unix_nano=point.start_time_unix_nano,
        time_unix_nano=point.time_unix_nano,
        count=point.count,
        sum=point.sum,
        quantiles=tuple((q.quantile, q.value) for q in point.quantile_values),
    )


def _decode_metric(
    metric: metrics_pb2.Metric,
    resource: Dict[str, AttrValue],
    scope: common_pb2.InstrumentationScope,
    protocol: str,
) -> MetricRecord:
    which = metric.WhichOneof("data")
    temporality: Optional[str] = None
    monotonic: Optional[bool] = None
    points: Tuple[DataPoint, ...] = ()
    kind = which or "unknown"
    if which == "sum":
        temporality = _temporality(metric.sum.aggregation_temporality)
        monotonic = metric.sum.is_monotonic
        points = tuple(_number_point(p) for p in metric.sum.data_points)
    elif which == "gauge":
        points = tuple(_number_point(p) for p in metric.gauge.data_points)
    elif which == "histogram":
        temporality = _temporality(metric.histogram.aggregation_temporality)
        points = tuple(_histogram_point(p) for p in metric.histogram.data_points)
    elif which == "exponential_histogram":
        temporality = _temporality(metric.exponential_histogram.aggregation_temporality)
        points = tuple(_exponential_point(p) for p in metric.exponential_histogram.data_points)
    elif which == "summary":
        points = tuple(_summary_point(p) for p in metric.summary.data_points)
    return MetricRecord(
        name=metric.name,
        description=metric.description,
        unit=metric.unit,
        kind=kind,
        temporality=temporality,
        is_monotonic=monotonic,
        data_points=points,
        resource=dict(resource),
        scope_name=scope.name,
        scope_version=scope.version,
        protocol=protocol,
    )


def _decode_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest, protocol: str
) -> List[MetricRecord]:
    records: List[MetricRecord] = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                records.append(_decode_metric(metric, resource, scope_metrics.scope, protocol))
    return records


# OTLP/JSON writes trace and span ids as hex, where the protobuf JSON mapping expects base64.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    pass  # not hex: leave it to the protobuf parser to accept or reject
            else:
                value = _hex_ids_to_base64(value)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


# --------------------------------------------------------------------------------------------------
# The receiver


class _Undecodable:
    """Stands in for a request body protobuf could not parse, so the handler can answer
    INVALID_ARGUMENT itself (gRPC's own deserializer failure would surface as INTERNAL)."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(parse: Callable[[bytes], Message]) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except Exception as exc:  # any parse failure is the client's problem, not ours
            return _Undecodable(f"cannot decode the request: {exc}")

    return deserialize


@dataclass
class _Fault:
    code: str
    signal: Optional[str]


@dataclass
class _Outcome:
    """What the receiver decided for one request, independent of the transport."""

    status: str
    message: str = ""
    items: int = 0
    rejected: int = 0
    response: Optional[Message] = None
    http_status: Optional[int] = None  # when HTTP needs a more precise answer than the gRPC code


class OtlpReceiver:
    """A local OTLP endpoint for traces and metrics over gRPC and HTTP.

    ``grpc_port`` / ``http_port``: ``0`` picks a free port, ``None`` disables that transport. The
    store keeps at most ``max_spans`` spans, ``max_metrics`` metric records and ``max_requests``
    request records (oldest dropped first); the totals (:attr:`span_total`, :meth:`request_count`)
    and listeners see everything.

    Example::

        with OtlpReceiver() as rx:
            print(rx.grpc_endpoint, rx.http_endpoint)
            rx.wait_for_spans(1)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: Optional[int] = 0,
        http_port: Optional[int] = 0,
        *,
        max_spans: int = 10_000,
        max_metrics: int = 10_000,
        max_requests: int = 1_000,
        max_body_bytes: int = _MAX_BODY_BYTES,
    ) -> None:
        if grpc_port is None and http_port is None:
            raise ValueError("at least one of grpc_port and http_port must be set")
        self._host = host
        self._want_grpc_port = grpc_port
        self._want_http_port = http_port
        self._max_body_bytes = max_body_bytes
        self._cond = threading.Condition()
        self._spans: Deque[SpanRecord] = collections.deque(maxlen=max_spans)
        self._metrics: Deque[MetricRecord] = collections.deque(maxlen=max_metrics)
        self._requests: Deque[RequestRecord] = collections.deque(maxlen=max_requests)
        self._request_counts: collections.Counter[Tuple[str, str, bool]] = collections.Counter()
        self._span_total = 0
        self._metric_total = 0
        self._faults: Deque[_Fault] = collections.deque()
        self._delay_s = 0.0
        self._span_listeners: List[SpansListener] = []
        self._metric_listeners: List[MetricsListener] = []
        # Listeners see batches in arrival order, one at a time, so an aggregator need not be
        # re-entrant; this lock is separate from the store's so readers never wait on a listener.
        self._listener_lock = threading.Lock()
        self._routes: Dict[str, JsonRoute] = {}
        self._grpc_server: Optional[grpc.Server] = None
        self._http_server: Optional[_HttpServer] = None
        self._http_thread: Optional[threading.Thread] = None
        self._grpc_port: Optional[int] = None
        self._http_port: Optional[int] = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Bind and start serving; returns ``self``. Raises ``OSError`` if a port is taken."""
        if self._started:
            return self
        try:
            if self._want_grpc_port is not None:
                self._start_grpc(self._want_grpc_port)
            if self._want_http_port is not None:
                self._start_http(self._want_http_port)
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop both servers and close open connections; safe to call twice."""
        grpc_server, self._grpc_server = self._grpc_server, None
        http_server, self._http_server = self._http_server, None
        if grpc_server is not None:
            grpc_server.stop(grace).wait(grace + 1.0)
        if http_server is not None:
            http_server.shutdown()
            http_server.close_connections()
            http_server.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=grace + 1.0)
            self._http_thread = None
        self._started = False

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_grpc(self, port: int) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="hud-otel-grpc"),
            options=[
                # gRPC turns SO_REUSEPORT on by default, which would let a second receiver bind a
                # port already in use and silently split the traffic.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self._max_body_bytes),
            ],
        )
        trace_servicer = _TraceServicer(self)
        metrics_servicer = _MetricsServicer(self)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    _TRACE_SERVICE,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            trace_servicer.Export,
                            request_deserializer=_lenient(
                                trace_service_pb2.ExportTraceServiceRequest.FromString
                            ),
                            response_serializer=_serialize,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    _METRICS_SERVICE,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            metrics_servicer.Export,
                            request_deserializer=_lenient(
                                metrics_service_pb2.ExportMetricsServiceRequest.FromString
                            ),
                            response_serializer=_serialize,
                        )
                    },
                ),
            )
        )
        address = f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot bind gRPC to {address}: {exc}") from exc
        if not bound:
            raise OSError(f"cannot bind gRPC to {address}")
        server.start()
        self._grpc_server = server
        self._grpc_port = int(bound)

    def _start_http(self, port: int) -> None:
        server_class = _HttpServer6 if ":" in self._host else _HttpServer
        server = server_class((self._host, port), _HttpHandler)
        server.receiver = self
        self._http_server = server
        self._http_port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="hud-otel-http",
            daemon=True,
        )
        thread.start()
        self._http_thread = thread

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host the servers are bound to."""
        return self._host

    @property
    def grpc_port(self) -> Optional[int]:
        """The bound gRPC port (``None`` before start or when gRPC is disabled)."""
        return self._grpc_port

    @property
    def http_port(self) -> Optional[int]:
        """The bound HTTP port (``None`` before start or when HTTP is disabled)."""
        return self._http_port

    def _connect_host(self) -> str:
        # A wildcard bind is reachable on loopback; clients cannot connect to the wildcard itself.
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_endpoint(self) -> str:
        """``http://host:port`` for ``OTLPSpanExporter(endpoint=..., insecure=True)`` (gRPC)."""
        if self._grpc_port is None:
            raise RuntimeError("the gRPC server is not running")
        return f"http://{self._connect_host()}:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL of the HTTP server (what ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes)."""
        if self._http_port is None:
            raise RuntimeError("the HTTP server is not running")
        return f"http://{self._connect_host()}:{self._http_port}"

    @property
    def traces_url(self) -> str:
        """Full OTLP/HTTP traces URL (what the HTTP ``OTLPSpanExporter(endpoint=...)`` takes)."""
        return self.http_endpoint + "/v1/traces"

    @property
    def metrics_url(self) -> str:
        """Full OTLP/HTTP metrics URL (what the HTTP ``OTLPMetricExporter(endpoint=...)`` takes)."""
        return self.http_endpoint + "/v1/metrics"

    # -- test and integration API ------------------------------------------------------------------

    def spans(self, name: Optional[str] = None) -> List[SpanRecord]:
        """The kept spans in arrival order, optionally only those with this span name."""
        with self._cond:
            return [s for s in self._spans if name is None or s.name == name]

    def metrics(self, name: Optional[str] = None) -> List[MetricRecord]:
        """The kept metric records in arrival order, optionally only those with this metric name."""
        with self._cond:
            return [m for m in self._metrics if name is None or m.name == name]

    def requests(self, signal: Optional[str] = None, protocol: Optional[str] = None) -> List[RequestRecord]:
        """The kept request records (headers, status...) in arrival order, optionally filtered by
        ``signal`` (``"traces"``/``"metrics"``) and ``protocol`` (``"grpc"``/``"http"``)."""
        with self._cond:
            return [
                r
                for r in self._requests
                if (signal is None or r.signal == signal) and (protocol is None or r.protocol == protocol)
            ]

    def request_count(
        self,
        signal: Optional[str] = None,
        protocol: Optional[str] = None,
        ok: Optional[bool] = None,
    ) -> int:
        """How many export requests arrived since start or :meth:`clear` (not capped)."""
        with self._cond:
            return sum(
                n
                for (proto, sig, was_ok), n in self._request_counts.items()
                if (signal is None or sig == signal)
                and (protocol is None or proto == protocol)
                and (ok is None or was_ok == ok)
            )

    @property
    def span_total(self) -> int:
        """How many spans were accepted since start or :meth:`clear`, kept or not."""
        with self._cond:
            return self._span_total

    @property
    def metric_total(self) -> int:
        """How many metric records were accepted, including those no longer kept."""
        with self._cond:
            return self._metric_total

    def wait_for_spans(
        self,
        n: int = 1,
        timeout: float = 5.0,
        predicate: Optional[Callable[[SpanRecord], bool]] = None,
    ) -> List[SpanRecord]:
        """Block until at least ``n`` kept spans (matching ``predicate`` if given) have arrived and
        return them all; raise ``TimeoutError`` listing what did arrive otherwise."""

        def matching() -> List[SpanRecord]:
            return [s for s in self._spans if predicate is None or predicate(s)]

        def missing(found: int) -> str:
            names = sorted({s.name for s in self._spans})
            return (
                f"expected {n} span(s) within {timeout}s, got {found} matching; "
                f"received {len(self._spans)} span(s) named {names}"
            )

        return self._wait_until(matching, n, timeout, missing)

    def wait_for_metrics(
        self, name: Optional[str] = None, n: int = 1, timeout: float = 5.0
    ) -> List[MetricRecord]:
        """Block until at least ``n`` kept metric records (named ``name`` if given) have arrived and
        return them all; raise ``TimeoutError`` otherwise."""

        def matching() -> List[MetricRecord]:
            return [m for m in self._metrics if name is None or m.name == name]

        def missing(found: int) -> str:
            names = sorted({m.name for m in self._metrics})
            return (
                f"expected {n} metric record(s) named {name!r} within {timeout}s, got {found}; "
                f"received metrics {names}"
            )

        return self._wait_until(matching, n, timeout, missing)

    def _wait_until(
        self,
        matching: Callable[[], List[_Record]],
        n: int,
        timeout: float,
        missing: Callable[[int], str],
    ) -> List[_Record]:
        """Wait on the store's condition until ``matching()`` has ``n`` records, at most ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = matching()
                if len(found) >= n:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(missing(len(found)))
                self._cond.wait(remaining)

    def wait_for_requests(
        self,
        n: int = 1,
        timeout: float = 5.0,
        signal: Optional[str] = None,
        protocol: Optional[str] = None,
    ) -> int:
        """Block until at least ``n`` requests (failed ones included) have arrived; return the
        count, or raise ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.request_count(signal=signal, protocol=protocol)
            if count >= n:
                return count
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"expected {n} request(s) within {timeout}s, got {count}")
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def fail_next(
        self,
        n: int = 1,
        code: Union[str, grpc.StatusCode] = "UNAVAILABLE",
        *,
        signal: Optional[str] = None,
    ) -> None:
        """Answer the next ``n`` export requests (of ``signal`` if given) with an error: gRPC status
        ``code`` (a ``grpc.StatusCode`` or its name), and over HTTP the matching status (UNAVAILABLE
        503, RESOURCE_EXHAUSTED 429, UNAUTHENTICATED 401, INVALID_ARGUMENT 400, others 500). Their
        data is not stored."""
        name = code.name if isinstance(code, grpc.StatusCode) else str(code).upper()
        if name not in grpc.StatusCode.__members__ or name == "OK":
            raise ValueError(f"not a gRPC error status code: {code!r}")
        if signal not in (None, "traces", "metrics"):
            raise ValueError(f"signal must be 'traces', 'metrics' or None, not {signal!r}")
        with self._cond:
            self._faults.extend(_Fault(name, signal) for _ in range(n))

    def set_delay(self, seconds: float) -> None:
        """Hold each following request this long before answering (a slow backend); 0: off."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._cond:
            self._delay_s = float(seconds)

    def clear(self) -> None:
        """Forget kept records, totals, request counts, pending faults and the delay."""
        with self._cond:
            self._spans.clear()
            self._metrics.clear()
            self._requests.clear()
            self._request_counts.clear()
            self._span_total = 0
            self._metric_total = 0
            self._faults.clear()
            self._delay_s = 0.0

    def add_listener(
        self,
        on_spans: Optional[SpansListener] = None,
        on_metrics: Optional[MetricsListener] = None,
    ) -> None:
        """Call ``on_spans`` / ``on_metrics`` with every accepted batch, after it is stored.

        A listener that raises is logged and does not affect the request."""
        with self._listener_lock:
            if on_spans is not None:
                self._span_listeners.append(on_spans)
            if on_metrics is not None:
                self._metric_listeners.append(on_metrics)

    def add_json_route(self, path: str, handler: JsonRoute) -> None:
        """Serve ``GET path`` on the HTTP port as JSON from ``handler``. A path ending in ``/`` is a
        prefix: the handler gets the URL-decoded rest. A handler returning ``None`` means 404."""
        self._routes[path] = handler

    # -- request handling shared by both transports -----------------------------------------------

    def _take_fault(self, signal: str) -> Optional[_Fault]:
        for fault in self._faults:
            if fault.signal is None or fault.signal == signal:
                self._faults.remove(fault)
                return fault
        return None

    def _handle(self, signal: str, protocol: str, request: object, headers: Dict[str, str]) -> _Outcome:
        """Decode, store and answer one export request; never raises."""
        with self._cond:
            delay = self._delay_s
        if delay:
            time.sleep(delay)
        try:
            outcome = self._process(signal, protocol, request)
        except Exception:
            _log.exception("hud-otel receiver: failed to process a %s request", signal)
            outcome = _Outcome("INTERNAL", "the receiver failed to process the request")
        self._record(signal, protocol, headers, outcome)
        return outcome

    def _record(self, signal: str, protocol: str, headers: Dict[str, str], outcome: _Outcome) -> None:
        record = RequestRecord(
            protocol=protocol,
            signal=signal,
            headers=headers,
            status=outcome.status,
            http_status=None,
            items=outcome.items,
            rejected=outcome.rejected,
            error=outcome.message or None,
        )
        if protocol == "http":
            record = _with_http_status(record, outcome.http_status)
        with self._cond:
            self._requests.append(record)
            self._request_counts[(protocol, signal, record.ok)] += 1
            self._cond.notify_all()

    def _process(self, signal: str, protocol: str, request: object) -> _Outcome:
        with self._cond:
            fault = self._take_fault(signal)
        if fault is not None:
            return _Outcome(fault.code, f"fault injected by the test receiver ({fault.code})")
        if isinstance(request, _Undecodable):
            return _Outcome("INVALID_ARGUMENT", request.error)
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            spans, rejected, reason = _decode_spans(request, protocol)
            with self._cond:
                self._spans.extend(spans)
                self._span_total += len(spans)
            self._notify_spans(spans)
            response = trace_service_pb2.ExportTraceServiceResponse()
            if rejected:
                response.partial_success.rejected_spans = rejected
                response.partial_success.error_message = reason or ""
            return _Outcome("OK", reason or "", len(spans), rejected, response)
        if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
            metrics = _decode_metrics(request, protocol)
            with self._cond:
                self._metrics.extend(metrics)
                self._metric_total += len(metrics)
            self._notify_metrics(metrics)
            points = sum(len(m.data_points) for m in metrics)
            return _Outcome("OK", "", points, 0, metrics_service_pb2.ExportMetricsServiceResponse())
        return _Outcome("INVALID_ARGUMENT", "unexpected request type")

    def _notify_spans(self, spans: Sequence[SpanRecord]) -> None:
        if not spans:
            return
        with self._listener_lock:
            for listener in self._span_listeners:
                try:
                    listener(spans)
                except Exception:
                    _log.exception("hud-otel receiver: a span listener failed")

    def _notify_metrics(self, metrics: Sequence[MetricRecord]) -> None:
        if not metrics:
            return
        with self._listener_lock:
            for listener in self._metric_listeners:
                try:
                    listener(metrics)
                except Exception:
                    _log.exception("hud-otel receiver: a metric listener failed")


def _with_http_status(record: RequestRecord, http_status: Optional[int]) -> RequestRecord:
    status = http_status or (200 if record.ok else _HTTP_STATUS_FOR_CODE.get(record.status, 500))
    return RequestRecord(
        protocol=record.protocol,
        signal=record.signal,
        headers=record.headers,
        status=record.status,
        http_status=status,
        items=record.items,
        rejected=record.rejected,
        error=record.error,
        received_at=record.received_at,
    )


def _serialize(message: Message) -> bytes:
    data: bytes = message.SerializeToString()
    return data


# --------------------------------------------------------------------------------------------------
# gRPC


def _grpc_headers(context: grpc.ServicerContext) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        text = value.hex() if isinstance(value, bytes) else str(value)
        key = str(key).lower()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _grpc_answer(
    receiver: OtlpReceiver, signal: str, request: object, context: grpc.ServicerContext
) -> Message:
    try:
        headers = _grpc_headers(context)
    except Exception:
        headers = {}
    outcome = receiver._handle(signal, "grpc", request, headers)
    if outcome.status != "OK" or outcome.response is None:
        # abort() raises to unwind the handler; gRPC turns it into the status for the client.
        context.abort(getattr(grpc.StatusCode, outcome.status), outcome.message)
    return outcome.response


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    """The OTLP TraceService, answering INVALID_ARGUMENT to bodies that do not decode."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: object, context: grpc.ServicerContext) -> Message:
        return _grpc_answer(self._receiver, "traces", request, context)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    """The OTLP MetricsService, answering INVALID_ARGUMENT to bodies that do not decode."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: object, context: grpc.ServicerContext) -> Message:
        return _grpc_answer(self._receiver, "metrics", request, context)


# --------------------------------------------------------------------------------------------------
# HTTP


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver

    def __init__(self, address: Tuple[str, int], handler: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        # Keep-alive connections would otherwise outlive stop() and keep being served.
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


_SIGNAL_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics"}
_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
_REQUEST_TYPES: Dict[str, Callable[[], Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}


class _BadRequest(Exception):
    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message


class _HttpHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the exporters' pooled connections are reused instead of reconnecting per batch.
    protocol_version = "HTTP/1.1"
    server_version = "hud-otel"
    timeout = 60
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("http %s - " + format, self.address_string(), *args)

    # -- POST: OTLP export -------------------------------------------------------------------------

    def do_POST(self) -> None:
        try:
            self._post()
        except Exception:
            _log.exception("hud-otel receiver: HTTP handler failed")
            self._try_send_status(500, "INTERNAL", "internal error", json_body=False)

    def _post(self) -> None:
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        signal = _SIGNAL_PATHS.get(path)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        as_json = content_type == "application/json"
        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver = self.server.receiver
        try:
            body = self._read_body()
            if signal is not None and content_type not in _PROTOBUF_TYPES and not as_json:
                raise _BadRequest(415, f"unsupported Content-Type {content_type!r}")
        except _BadRequest as exc:
            self.close_connection = True  # the body may be unread; the stream is out of step
            if signal is not None:
                rejected = _Outcome("INVALID_ARGUMENT", exc.message, http_status=exc.http_status)
                receiver._record(signal, "http", headers, rejected)
            self._send_status(exc.http_status, "INVALID_ARGUMENT", exc.message, as_json)
            return
        if signal is None:
            self._send_status(404, "NOT_FOUND", f"no OTLP endpoint at {path}", as_json)
            return
        request = self._parse(signal, body, as_json)
        outcome = receiver._handle(signal, "http", request, headers)
        if outcome.status != "OK" or outcome.response is None:
            http_status = _HTTP_STATUS_FOR_CODE.get(outcome.status, 500)
            self._send_status(http_status, outcome.status, outcome.message, as_json)
            return
        if as_json:
            payload = json_format.MessageToJson(outcome.response).encode("utf-8")
            self._send(200, "application/json", payload)
        else:
            self._send(200, "application/x-protobuf", outcome.response.SerializeToString())

    def _read_body(self) -> bytes:
        limit = self.server.receiver._max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raw = self._read_chunked(limit)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError as exc:
                raise _BadRequest(400, "invalid Content-Length") from exc
            if length < 0:
                raise _BadRequest(400, "invalid Content-Length")
            if length > limit:
                raise _BadRequest(413, f"request body over {limit} bytes")
            raw = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("identity", ""):
            return raw
        if encoding in ("gzip", "x-gzip", "deflate"):
            wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
            inflater = zlib.decompressobj(wbits)
            try:
                # Bounded so a small compressed body cannot expand without limit.
                data = inflater.decompress(raw, limit + 1)
            except zlib.error as exc:
                raise _BadRequest(400, f"cannot decompress the {encoding} body: {exc}") from exc
            if len(data) > limit:
                raise _BadRequest(413, f"decompressed request body over {limit} bytes")
            if not inflater.eof:
                raise _BadRequest(400, f"truncated {encoding} body")
            return data
        raise _BadRequest(415, f"unsupported Content-Encoding {encoding!r}")

    def _read_chunked(self, limit: int) -> bytes:
        parts: List[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise _BadRequest(400, "invalid chunked encoding") from exc
            if size == 0:
                # Trailers end with an empty line.
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BadRequest(413, f"request body over {limit} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    @staticmethod
    def _parse(signal: str, body: bytes, as_json: bool) -> object:
        message = _REQUEST_TYPES[signal]()
        try:
            if as_json:
                json_format.ParseDict(
                    _hex_ids_to_base64(json.loads(body.decode("utf-8"))),
                    message,
                    ignore_unknown_fields=True,
                )
            else:
                message.ParseFromString(body)
        except (DecodeError, json_format.ParseError, ValueError, TypeError) as exc:
            return _Undecodable(f"cannot decode the request: {exc}")
        return message

    # -- GET: the JSON API of the viewer -----------------------------------------------------------

    def do_GET(self) -> None:
        try:
            self._get()
        except Exception:
            _log.exception("hud-otel receiver: HTTP GET handler failed")
            self._try_send_json(500, {"error": "internal error"})

    def _get(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        routes = self.server.receiver._routes
        handler: Optional[JsonRoute] = None
        rest = ""
        if path in routes:
            handler = routes[path]
        else:
            for prefix, candidate in routes.items():
                if prefix.endswith("/") and path.startswith(prefix):
                    handler, rest = candidate, urllib.parse.unquote(path[len(prefix) :])
                    break
        result = handler(rest) if handler is not None else None
        if result is None:
            self._send_json(404, {"error": f"not found: {path}"})
        else:
            self._send_json(200, result)

    # -- responses ---------------------------------------------------------------------------------

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: object) -> None:
        self._send(status, "application/json", json.dumps(payload).encode("utf-8"))

    def _try_send_json(self, status: int, payload: object) -> None:
        try:
            self._send_json(status, payload)
        except Exception:
            self.close_connection = True

    def _send_status(self, http_status: int, code: str, message: str, json_body: bool) -> None:
        # OTLP/HTTP failures carry a google.rpc.Status in the request's own encoding.
        status = status_pb2.Status(code=getattr(grpc.StatusCode, code).value[0], message=message)
        if json_body:
            self._send(http_status, "application/json", json_format.MessageToJson(status).encode())
        else:
            self._send(http_status, "application/x-protobuf", status.SerializeToString())

    def _try_send_status(self, http_status: int, code: str, message: str, json_body: bool) -> None:
        try:
            self._send_status(http_status, code, message, json_body)
        except Exception:
            self.close_connection = True
