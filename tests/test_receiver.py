"""The local OTLP receiver, fed by the real OpenTelemetry SDK and OTLP exporters over gRPC and HTTP."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Optional

import grpc
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from hud_otel import _attributes as A
from hud_otel._receiver import OtlpReceiver, SpanEvent, SpanLink, SpanRecord

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def span_exporter(rx: OtlpReceiver, protocol: str, headers: Optional[dict[str, str]] = None) -> Any:
    if protocol == "grpc":
        return GrpcSpanExporter(
            endpoint=rx.grpc_endpoint,
            insecure=True,
            headers=headers,
            compression=grpc.Compression.Gzip,
            timeout=5,
        )
    return HttpSpanExporter(
        endpoint=rx.traces_url, headers=headers, compression=HttpCompression.Gzip, timeout=5
    )


def metric_exporter(rx: OtlpReceiver, protocol: str, temporality: AggregationTemporality) -> Any:
    preferred: dict[type, AggregationTemporality] = {Counter: temporality}
    if protocol == "grpc":
        return GrpcMetricExporter(
            endpoint=rx.grpc_endpoint, insecure=True, preferred_temporality=preferred, timeout=5
        )
    return HttpMetricExporter(endpoint=rx.metrics_url, preferred_temporality=preferred, timeout=5)


def tracer_provider(
    rx: OtlpReceiver, protocol: str, **kwargs: Any
) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider exporting both to the receiver and to memory, the latter as ground truth."""
    provider = TracerProvider(resource=Resource.create({"service.name": "receiver-test"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter(rx, protocol, **kwargs)))
    return provider, memory


def _py(value: Any) -> Any:
    # The SDK keeps sequences as tuples; the receiver hands back lists.
    return list(value) if isinstance(value, tuple) else value


def expected_record(span: ReadableSpan, protocol: str) -> SpanRecord:
    """What the receiver must make of this SDK span: every field, from the SDK's own view."""
    assert span.context is not None and span.start_time is not None and span.end_time is not None
    return SpanRecord(
        name=span.name,
        kind=span.kind.name,
        trace_id=format(span.context.trace_id, "032x"),
        span_id=format(span.context.span_id, "016x"),
        parent_span_id=format(span.parent.span_id, "016x") if span.parent else None,
        start_time_unix_nano=span.start_time,
        end_time_unix_nano=span.end_time,
        attributes={k: _py(v) for k, v in (span.attributes or {}).items()},
        status_code=span.status.status_code.name,
        status_description=span.status.description or "",
        events=tuple(
            SpanEvent(e.name, e.timestamp, {k: _py(v) for k, v in (e.attributes or {}).items()})
            for e in span.events
        ),
        links=tuple(
            SpanLink(
                format(link.context.trace_id, "032x"),
                format(link.context.span_id, "016x"),
                {k: _py(v) for k, v in (link.attributes or {}).items()},
            )
            for link in span.links
        ),
        resource={k: _py(v) for k, v in span.resource.attributes.items()},
        scope_name=span.instrumentation_scope.name if span.instrumentation_scope else "",
        scope_version=(span.instrumentation_scope.version or "") if span.instrumentation_scope else "",
        protocol=protocol,
    )


def emit_sample_spans(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("receiver-test-scope", "1.2.3")
    with tracer.start_as_current_span("outside") as outside:
        outside_context = outside.get_span_context()
    with tracer.start_as_current_span(
        "process orders",
        kind=SpanKind.CONSUMER,
        links=[Link(outside_context, {"link.kind": "origin"})],
        attributes={
            A.FLOW_NAME: "orders",
            A.FLOW_TYPE: "queue",
            A.QUEUE_MESSAGE_COUNT: 3,
            A.QUEUE_E2E_DURATION_MS: 12.5,
            "hud.context.tags": ["a", "b"],
            "hud.context.flag": True,
        },
    ) as flow:
        with tracer.start_as_current_span("db query", kind=SpanKind.CLIENT):
            pass
        flow.add_event("retry", {"attempt": 2})
        flow.set_status(Status(StatusCode.ERROR, "bad payload"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_spans_arrive_whole(rx: OtlpReceiver, protocol: str) -> None:
    """Spans from the real SDK and OTLP exporter (gzip) arrive as records equal, field by field, to
    what the SDK exported: ids, parent, kind, typed attributes, events, links, status, resource."""
    provider, memory = tracer_provider(rx, protocol)
    emit_sample_spans(provider)
    provider.shutdown()

    expected = [expected_record(s, protocol) for s in memory.get_finished_spans()]
    assert len(expected) == 3
    assert rx.wait_for_spans(3) == expected
    flow = rx.spans("process orders")[0]
    assert flow.kind == "CONSUMER" and flow.status_code == "ERROR"
    assert flow.attributes[A.QUEUE_E2E_DURATION_MS] == 12.5
    assert flow.links[0].trace_id == rx.spans("outside")[0].trace_id
    assert rx.spans("db query")[0].parent_span_id == flow.span_id
    assert rx.request_count(signal="traces", protocol=protocol, ok=True) == 3


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_each_request_keeps_its_headers(rx: OtlpReceiver, protocol: str) -> None:
    """Headers the exporter was configured with (an api key, say) are recorded per request, with
    lowercase names, so export tests can see exactly what reached the backend."""
    # gRPC metadata keys must be lowercase on the wire; HTTP header names are case-insensitive.
    name = "x-api-key" if protocol == "grpc" else "X-Api-Key"
    provider, _ = tracer_provider(rx, protocol, headers={name: "secret-1"})
    provider.get_tracer("t").start_span("one").end()
    provider.shutdown()

    (request,) = rx.requests(signal="traces")
    assert request.protocol == protocol and request.ok and request.items == 1
    assert request.headers["x-api-key"] == "secret-1"
    if protocol == "http":
        assert request.headers["content-encoding"] == "gzip"
        assert request.http_status == 200


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA])
def test_sdk_metrics_arrive_with_points(
    rx: OtlpReceiver, protocol: str, temporality: AggregationTemporality
) -> None:
    """Counters and histograms from the real SDK arrive with name, unit, temporality, attributes,
    values, counts, sums and bucket counts."""
    reader = PeriodicExportingMetricReader(
        metric_exporter(rx, protocol, temporality), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter(A.METER_NAME)
    meter.create_counter(A.METRIC_SKIPPED).add(2, {A.SKIP_REASON: A.REASON_NESTED})
    histogram = meter.create_histogram(A.METRIC_DURATION, unit="s")
    histogram.record(0.5, {A.FLOW_NAME: "job"})
    histogram.record(7.0, {A.FLOW_NAME: "job"})
    provider.shutdown()  # one final collection and export

    (skipped,) = rx.metrics(A.METRIC_SKIPPED)
    assert skipped.kind == "sum" and skipped.is_monotonic is True
    assert skipped.temporality == ("delta" if temporality == AggregationTemporality.DELTA else "cumulative")
    (point,) = skipped.data_points
    assert point.attributes == {A.SKIP_REASON: A.REASON_NESTED} and point.value == 2

    (duration,) = rx.metrics(A.METRIC_DURATION)
    assert duration.kind == "histogram" and duration.unit == "s"
    assert duration.scope_name == A.METER_NAME
    (point,) = duration.data_points
    assert (point.count, point.sum, point.min, point.max) == (2, 7.5, 0.5, 7.0)
    assert point.explicit_bounds[:3] == (0.0, 5.0, 10.0)
    assert point.bucket_counts[:3] == (0, 1, 1) and sum(point.bucket_counts) == 2
    assert rx.metric_total == 2


def test_malformed_grpc_request_gets_invalid_argument_and_serving_goes_on(rx: OtlpReceiver) -> None:
    """A gRPC body that is not an ExportTraceServiceRequest is answered INVALID_ARGUMENT (not
    INTERNAL), recorded as a failed request, and the next real export still succeeds."""
    with grpc.insecure_channel(rx.grpc_endpoint.removeprefix("http://")) as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        with pytest.raises(grpc.RpcError) as raised:
            export(b"\xff\xff\xff\xff", timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in (raised.value.details() or "")
    (failed,) = rx.requests()
    assert failed.status == "INVALID_ARGUMENT" and not failed.ok

    provider, _ = tracer_provider(rx, "grpc")
    provider.get_tracer("t").start_span("after").end()
    provider.shutdown()
    assert [s.name for s in rx.wait_for_spans(1)] == ["after"]


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v1/traces", b"\xff\xff\xff", PROTOBUF, 400),
        ("/v1/metrics", b"\x0a\x05\x01", PROTOBUF, 400),
        ("/v1/traces", b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}, 400),
        ("/v1/traces", b"", {**PROTOBUF, "Content-Encoding": "br"}, 415),
        ("/v1/traces", b"", {"Content-Type": "text/plain"}, 415),
        ("/v1/logs", b"", PROTOBUF, 404),
    ],
    ids=["bad-protobuf", "truncated-metrics", "bad-gzip", "unknown-encoding", "text", "no-logs"],
)
def test_malformed_http_request_gets_a_status_body_and_serving_goes_on(
    rx: OtlpReceiver, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    """A bad OTLP/HTTP request gets its 4xx with a google.rpc.Status protobuf body, is recorded as a
    failed request, and the very next real export on the same server succeeds."""
    code, content_type, payload = _post(rx.http_endpoint + path, body, headers)
    assert (code, content_type) == (status, "application/x-protobuf")
    message = status_pb2.Status.FromString(payload)
    assert message.message  # says what was wrong
    if path != "/v1/logs":
        (failed,) = rx.requests()
        assert (failed.ok, failed.status, failed.http_status) == (False, "INVALID_ARGUMENT", status)
        assert failed.error == message.message

    provider, _ = tracer_provider(rx, "http")
    provider.get_tracer("t").start_span("after").end()
    provider.shutdown()
    assert [s.name for s in rx.wait_for_spans(1)] == ["after"]


def test_malformed_json_gets_a_json_status(rx: OtlpReceiver) -> None:
    """A request in JSON that does not parse gets 400 with the google.rpc.Status as JSON."""
    code, content_type, payload = _post(
        rx.traces_url, b'{"resourceSpans": 7}', {"Content-Type": "application/json"}
    )
    assert (code, content_type) == (400, "application/json")
    assert json.loads(payload)["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_otlp_json_with_hex_ids_is_decoded(rx: OtlpReceiver) -> None:
    """OTLP/JSON (hex ids, camelCase, string int64s, gzip) decodes like protobuf."""
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "browser"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "checkout",
                                "kind": 1,
                                "startTimeUnixNano": "1000",
                                "endTimeUnixNano": "5000",
                                "attributes": [
                                    {"key": A.FLOW_TYPE, "value": {"stringValue": "custom"}},
                                    {"key": "n", "value": {"intValue": "42"}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    body = gzip.compress(json.dumps(document).encode())
    code, content_type, payload = _post(
        rx.traces_url, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert (code, content_type) == (200, "application/json")
    assert json.loads(payload) == {}
    (span,) = rx.spans()
    assert span == SpanRecord(
        name="checkout",
        kind="INTERNAL",
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174",
        parent_span_id=None,
        start_time_unix_nano=1000,
        end_time_unix_nano=5000,
        attributes={A.FLOW_TYPE: "custom", "n": 42},
        status_code="ERROR",
        status_description="boom",
        events=(),
        links=(),
        resource={"service.name": "js"},
        scope_name="browser",
        scope_version="",
        protocol="http",
    )


def test_spans_without_identity_are_rejected_alone(rx: OtlpReceiver) -> None:
    """A span with an all-zero trace id is rejected through OTLP partial success while the valid
    span of the same request is kept."""
    good = trace_pb2.Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="good")
    bad = trace_pb2.Span(trace_id=b"\x00" * 16, span_id=b"\x03" * 8, name="bad")
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                scope_spans=[
                    trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="s"), spans=[good, bad])
                ]
            )
        ]
    )
    code, _, payload = _post(rx.traces_url, request.SerializeToString(), PROTOBUF)
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(payload)
    assert code == 200 and response.partial_success.rejected_spans == 1
    assert [s.name for s in rx.spans()] == ["good"]
    (record,) = rx.requests()
    assert (record.ok, record.items, record.rejected) == (True, 1, 1)


def test_memory_is_bounded_but_totals_keep_counting() -> None:
    """Past ``max_spans`` the oldest spans are dropped from the store, while ``span_total`` and the
    listeners still see every span."""
    seen: list[str] = []
    with OtlpReceiver(max_spans=3, http_port=None) as rx:
        rx.add_listener(on_spans=lambda spans: seen.extend(s.name for s in spans))
        provider, _ = tracer_provider(rx, "grpc")
        tracer = provider.get_tracer("t")
        for i in range(5):
            tracer.start_span(f"s{i}").end()
        provider.shutdown()
        assert [s.name for s in rx.spans()] == ["s2", "s3", "s4"]
        assert rx.span_total == 5
        assert seen == [f"s{i}" for i in range(5)]


def test_a_failing_listener_does_not_fail_the_request(rx: OtlpReceiver) -> None:
    """A listener that raises is logged; the export still succeeds and the span is stored."""

    def broken(spans: Any) -> None:
        raise RuntimeError("listener bug")

    rx.add_listener(on_spans=broken)
    provider, _ = tracer_provider(rx, "grpc")
    provider.get_tracer("t").start_span("kept").end()
    provider.shutdown()
    assert [s.name for s in rx.spans()] == ["kept"]
    assert rx.request_count(ok=True) == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_fail_next_fails_exactly_that_many_exports(rx: OtlpReceiver, protocol: str) -> None:
    """``fail_next(n, code)`` answers the next n exports with that error (a non-retryable one makes
    the real exporter report FAILURE at once), stores nothing from them, then recovers."""
    rx.fail_next(1, "PERMISSION_DENIED", signal="traces")
    provider = TracerProvider()
    exporter = span_exporter(rx, protocol)
    tracer = provider.get_tracer("t")
    first, second = tracer.start_span("first"), tracer.start_span("second")
    first.end()
    second.end()
    assert exporter.export([first]) == SpanExportResult.FAILURE
    assert exporter.export([second]) == SpanExportResult.SUCCESS
    exporter.shutdown()

    assert [s.name for s in rx.spans()] == ["second"]
    failed, ok = rx.requests()
    assert failed.status == "PERMISSION_DENIED" and ok.ok
    if protocol == "http":
        assert failed.http_status == 403


def test_fail_next_with_a_retryable_code_is_retried_by_the_exporter(rx: OtlpReceiver) -> None:
    """UNAVAILABLE is retryable in OTLP: the real gRPC exporter retries and the span arrives."""
    rx.fail_next(1)
    provider, _ = tracer_provider(rx, "grpc")
    provider.get_tracer("t").start_span("retried").end()
    provider.shutdown()
    assert [s.name for s in rx.spans()] == ["retried"]
    assert [r.status for r in rx.requests()] == ["UNAVAILABLE", "OK"]


def test_fail_next_rejects_codes_that_are_not_errors(rx: OtlpReceiver) -> None:
    """Asking for an "OK" failure or an unknown code is a test-writing mistake, reported at once."""
    with pytest.raises(ValueError):
        rx.fail_next(1, "OK")
    with pytest.raises(ValueError):
        rx.fail_next(1, "NOPE")


def test_set_delay_slows_every_answer(rx: OtlpReceiver) -> None:
    """``set_delay`` holds each request before answering, like a slow backend; 0 turns it off."""
    rx.set_delay(0.3)
    provider, _ = tracer_provider(rx, "http")
    tracer = provider.get_tracer("t")
    started = time.monotonic()
    tracer.start_span("slow").end()
    assert time.monotonic() - started >= 0.3
    rx.set_delay(0)
    started = time.monotonic()
    tracer.start_span("fast").end()
    assert time.monotonic() - started < 0.3
    provider.shutdown()


def test_wait_for_spans_times_out_with_what_arrived(rx: OtlpReceiver) -> None:
    """``wait_for_spans`` raises TimeoutError naming the spans that did arrive."""
    provider, _ = tracer_provider(rx, "grpc")
    provider.get_tracer("t").start_span("only-one").end()
    provider.shutdown()
    with pytest.raises(TimeoutError, match="only-one"):
        rx.wait_for_spans(2, timeout=0.2)
    assert len(rx.wait_for_spans(1, predicate=lambda s: s.name == "only-one")) == 1


def test_wait_for_spans_wakes_up_when_spans_arrive(rx: OtlpReceiver) -> None:
    """A waiter blocked in ``wait_for_spans`` returns as soon as an export from another thread
    lands, well before its timeout."""
    provider, _ = tracer_provider(rx, "grpc")

    def later() -> None:
        time.sleep(0.1)
        provider.get_tracer("t").start_span("late").end()

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    assert [s.name for s in rx.wait_for_spans(1, timeout=5)] == ["late"]
    assert time.monotonic() - started < 4
    thread.join()
    provider.shutdown()


def test_clear_forgets_everything(rx: OtlpReceiver) -> None:
    """``clear`` empties the store, the totals, the request log and pending faults."""
    rx.fail_next(5)
    provider, _ = tracer_provider(rx, "http")
    rx.clear()
    provider.get_tracer("t").start_span("fresh").end()
    provider.shutdown()
    assert [s.name for s in rx.spans()] == ["fresh"]
    assert rx.request_count() == 1


def test_json_routes_answer_get_requests(rx: OtlpReceiver) -> None:
    """``add_json_route`` serves JSON on the HTTP port: exact paths and URL-decoded prefixes, with
    404 when the handler has nothing."""
    rx.add_json_route("/api/ping", lambda rest: {"pong": True})
    rx.add_json_route("/api/echo/", lambda rest: {"rest": rest} if rest != "missing" else None)
    with urllib.request.urlopen(rx.http_endpoint + "/api/ping", timeout=5) as response:
        assert json.loads(response.read()) == {"pong": True}
    with urllib.request.urlopen(rx.http_endpoint + "/api/echo/a%20b%2Fc", timeout=5) as response:
        assert json.loads(response.read()) == {"rest": "a b/c"}
    for path in ("/api/echo/missing", "/nothing"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(rx.http_endpoint + path, timeout=5)
        assert raised.value.code == 404


def test_stop_frees_the_ports_and_is_idempotent() -> None:
    """After stop nothing listens on either port any more; stopping twice is harmless."""
    rx = OtlpReceiver().start()
    ports = (rx.grpc_port, rx.http_port)
    rx.stop()
    rx.stop()
    for port in ports:
        assert port is not None
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_is_an_error_not_a_shared_port() -> None:
    """Binding gRPC or HTTP to a port another receiver holds raises OSError (gRPC's default
    SO_REUSEPORT would otherwise let both bind and split the traffic)."""
    with OtlpReceiver() as first:
        with pytest.raises(OSError):
            OtlpReceiver(grpc_port=first.grpc_port, http_port=None).start()
        with pytest.raises(OSError):
            OtlpReceiver(grpc_port=None, http_port=first.http_port).start()


def test_one_transport_can_be_disabled() -> None:
    """``http_port=None`` runs gRPC only; asking for the missing endpoint is an error."""
    with OtlpReceiver(http_port=None) as rx:
        assert rx.grpc_port and rx.http_port is None
        with pytest.raises(RuntimeError):
            rx.http_endpoint  # noqa: B018
    with pytest.raises(ValueError):
        OtlpReceiver(grpc_port=None, http_port=None)
