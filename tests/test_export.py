"""OTLP export against a real receiver on loopback (CONTRACT section 4): both protocols, attach-never-replace,
the API key rules, user-pipeline headers kept away from a Hud endpoint, and a backend that is down or slow."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hud_otel as hud_sdk
from hud_otel._receiver import OtlpReceiver
from hud_otel._state import STATE
from tests.otlp import clear_settings, free_port, whole

KEY = "hud-test-key-7f3a9c"
PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(autouse=True)
def _clean(monkeypatch, otel_globals):
    """No setting from the developer's environment; fresh OpenTelemetry globals, restored afterwards."""
    clear_settings(monkeypatch)


@pytest.fixture
def receiver():
    """A loopback OTLP receiver; hud_otel is shut down before it stops, so no export waits on it."""
    with OtlpReceiver() as rx:
        yield rx
        hud_sdk.shutdown()


def endpoint_of(rx: OtlpReceiver, protocol: str) -> str:
    return rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint


def keep_a_copy() -> InMemorySpanExporter:
    """What the SDK itself finished, to compare the received spans with."""
    copy = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(copy))
    return copy


def run_contract_flows() -> datetime:
    """One queue flow with every queue attribute, context and a set_failure; one failing decorated flow."""
    enqueued = datetime.now(timezone.utc) - timedelta(seconds=2)
    with hud_sdk.sync_flow(
        "orders", flow_type=hud_sdk.FlowType.QUEUE, framework="sqs", enqueued_at=enqueued, message_count=3
    ):
        hud_sdk.set_context(order_id=42, tenant="acme", ratio=0.5, tags=["a", "b"], ok=True)
        hud_sdk.set_failure("OrderRejected", reason="3 invalid rows")

    @hud_sdk.sync_flow("nightly-report")
    def nightly_report():
        raise ValueError("no data")

    with pytest.raises(ValueError):
        nightly_report()
    return enqueued


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_flow_arrives_over_each_protocol_with_every_contract_attribute_and_its_metrics(receiver, protocol):
    """Over gRPC and over HTTP/protobuf, the received flow spans equal what the SDK finished, attribute by
    attribute (CONTRACT section 3), and the four flow metrics arrive with their attributes."""
    hud_sdk.register(endpoint=endpoint_of(receiver, protocol), protocol=protocol, service="billing")
    copy = keep_a_copy()
    enqueued = run_contract_flows()
    assert hud_sdk.flush(10.0)

    received = {s.name: s for s in receiver.wait_for_spans(2)}
    assert set(received) == {"process orders", "nightly-report"}
    orders = whole(received["process orders"])
    e2e = orders["attributes"].pop("hud.queue.e2e_duration_ms")
    assert orders == {
        "name": "process orders",
        "kind": "CONSUMER",
        "parent": None,
        "attributes": {
            "hud.flow.name": "orders",
            "hud.flow_type": "queue",
            "hud.framework": "sqs",
            "hud.flow.outcome": "failure",
            "hud.flow.error": "OrderRejected",
            "error.type": "OrderRejected",
            "messaging.system": "aws_sqs",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "orders",
            "messaging.batch.message_count": 3,
            "hud.queue.message_count": 3,
            "hud.queue.enqueued_at": enqueued.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "hud.context.order_id": 42,
            "hud.context.tenant": "acme",
            "hud.context.ratio": 0.5,
            "hud.context.tags": ["a", "b"],
            "hud.context.ok": True,
            "hud.context.reason": "3 invalid rows",
        },
        "status": ("ERROR", "3 invalid rows"),
        "links": [],
        "events": [],
    }
    assert isinstance(e2e, float) and 2000 <= e2e < 60_000
    report = whole(received["nightly-report"])
    assert report["attributes"].pop("code.file.path") == __file__
    assert report == {
        "name": "nightly-report",
        "kind": "INTERNAL",
        "parent": None,
        "attributes": {
            "hud.flow.name": "nightly-report",
            "hud.flow_type": "custom",
            "hud.framework": "custom",
            "hud.flow.outcome": "failure",
            "hud.flow.error": "ValueError",
            "error.type": "ValueError",
            "code.function.name": "tests.test_export.run_contract_flows.<locals>.nightly_report",
        },
        "status": ("ERROR", "ValueError: no data"),
        "links": [],
        "events": ["exception"],
    }
    # Nothing lost or changed on the way: the received attributes are exactly the SDK's.
    for finished in copy.get_finished_spans():
        sdk_attributes = {k: list(v) if isinstance(v, tuple) else v for k, v in finished.attributes.items()}
        assert received[finished.name].attributes == sdk_attributes
        assert received[finished.name].trace_id == format(finished.context.trace_id, "032x")
    assert {s.resource["service.name"] for s in received.values()} == {"billing"}
    assert all(s.protocol == ("grpc" if protocol == "grpc" else "http") for s in received.values())

    metrics_by_name = {m.name: m for m in receiver.wait_for_metrics(n=1)}
    assert {"hud.flow.duration", "hud.flow.e2e_duration", "hud.flow.messages"} <= set(metrics_by_name)
    duration = {
        tuple(sorted(p.attributes.items())): p.count for p in metrics_by_name["hud.flow.duration"].data_points
    }
    assert duration == {
        tuple(
            sorted(
                {
                    "hud.flow.name": "orders",
                    "hud.flow_type": "queue",
                    "hud.framework": "sqs",
                    "hud.flow.outcome": "failure",
                    "error.type": "OrderRejected",
                }.items()
            )
        ): 1,
        tuple(
            sorted(
                {
                    "hud.flow.name": "nightly-report",
                    "hud.flow_type": "custom",
                    "hud.framework": "custom",
                    "hud.flow.outcome": "failure",
                    "error.type": "ValueError",
                }.items()
            )
        ): 1,
    }
    assert metrics_by_name["hud.flow.duration"].unit == "s"
    (messages,) = metrics_by_name["hud.flow.messages"].data_points
    assert messages.value == 3
    assert metrics_by_name["hud.flow.e2e_duration"].data_points[0].count == 1


def test_exports_are_gzip_compressed(receiver):
    """OTLP/HTTP requests carry Content-Encoding: gzip (gRPC uses the channel's gzip compression)."""
    hud_sdk.register(endpoint=receiver.http_endpoint, protocol="http/protobuf")
    with hud_sdk.sync_flow("compressed"):
        pass
    assert hud_sdk.flush(10.0)
    requests = receiver.requests(protocol="http")
    assert requests and all(r.headers.get("content-encoding") == "gzip" for r in requests)


def test_with_the_users_providers_set_both_their_exporter_and_the_hud_endpoint_get_the_flow():
    """Attach, never replace: the user's own exporter and a separate Hud endpoint both receive the flow;
    the user's providers stay installed; Hud gets flows, the spans inside them and hud_otel's metrics only."""
    with OtlpReceiver() as collector, OtlpReceiver() as hud:
        resource = Resource.create({"service.name": "users-app"})
        user_tp = TracerProvider(resource=resource)
        user_tp.add_span_processor(BatchSpanProcessor(GrpcSpanExporter(endpoint=collector.grpc_endpoint)))
        user_mp = MeterProvider(
            resource=resource,
            metric_readers=[
                PeriodicExportingMetricReader(GrpcMetricExporter(endpoint=collector.grpc_endpoint))
            ],
        )
        trace.set_tracer_provider(user_tp)
        metrics.set_meter_provider(user_mp)
        try:
            hud_sdk.register(endpoint=hud.http_endpoint, protocol="http/protobuf", api_key=KEY)
            assert trace.get_tracer_provider() is user_tp
            assert metrics.get_meter_provider() is user_mp

            app_tracer = trace.get_tracer("users-app")
            metrics.get_meter("users-app").create_counter("app.jobs").add(1)
            with app_tracer.start_as_current_span("unrelated work"):
                pass
            with hud_sdk.sync_flow("close-books"):
                with app_tracer.start_as_current_span("load ledger"):
                    pass
            assert hud_sdk.flush(10.0)
            user_tp.force_flush()
            user_mp.force_flush()

            at_collector = {s.name: s for s in collector.wait_for_spans(3)}
            assert set(at_collector) == {"unrelated work", "close-books", "load ledger"}
            at_hud = {s.name: s for s in hud.wait_for_spans(2)}
            assert set(at_hud) == {"close-books", "load ledger"}
            assert at_hud["close-books"].attributes == at_collector["close-books"].attributes
            assert at_hud["load ledger"].attributes["hud.flow.name"] == "close-books"
            assert at_hud["load ledger"].parent_span_id == at_hud["close-books"].span_id
            assert at_hud["close-books"].resource["service.name"] == "users-app"

            assert "hud.flow.duration" in {m.name for m in collector.wait_for_metrics("hud.flow.duration")}
            hud_metrics = {m.name for m in hud.wait_for_metrics("hud.flow.duration")}
            assert "app.jobs" not in hud_metrics and "app.jobs" in {m.name for m in collector.metrics()}
            assert all(m.scope_name == "hud_otel" for m in hud.metrics())

            assert {r.headers.get("authorization") for r in hud.requests()} == {f"Bearer {KEY}"}
            assert all("authorization" not in r.headers for r in collector.requests())
        finally:
            hud_sdk.shutdown()
            user_tp.shutdown()
            user_mp.shutdown()
        assert trace.get_tracer_provider() is user_tp


def test_an_api_key_without_a_hud_endpoint_on_the_users_pipeline_is_not_sent_and_says_so(caplog):
    """With the user's providers and no separate endpoint, flows go through the user's exporters; a key has
    nowhere to go, which is logged once (without the key)."""
    user_tp = TracerProvider()
    trace.set_tracer_provider(user_tp)
    with caplog.at_level(logging.WARNING, logger="hud_otel"):
        hud_sdk.register(api_key=KEY)
    assert "API key is set but flows go through your own tracer provider" in caplog.text
    assert KEY not in caplog.text
    user_tp.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_user_pipeline_headers_never_reach_a_separate_hud_endpoint(receiver, monkeypatch, protocol):
    """OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)HEADERS, meant for the user's collector, are not sent to the Hud
    endpoint over either protocol; the key and hud_otel's own header are."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=user-secret-1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-collector-token=user-secret-2")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-collector-token=user-secret-3")
    hud_sdk.register(endpoint=endpoint_of(receiver, protocol), protocol=protocol, api_key=KEY)
    with hud_sdk.sync_flow("headers"):
        pass
    assert hud_sdk.flush(10.0)
    requests = receiver.requests()
    assert {r.signal for r in requests} == {"traces", "metrics"}
    for request in requests:
        assert "x-collector-token" not in request.headers
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["x-hud-otel-sdk"].startswith("hud_otel/")


def test_the_stock_http_exporter_merges_otel_headers_into_explicit_ones(receiver, monkeypatch):
    """Why hud_otel pins the HTTP headers itself: the stock OTLP/HTTP exporter, given explicit headers, still
    adds OTEL_EXPORTER_OTLP_HEADERS. Should a release stop doing so, this test says the workaround can go."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=user-secret")
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(HttpSpanExporter(endpoint=receiver.traces_url, headers={"authorization": "x"}))
    )
    provider.get_tracer("t").start_span("plain").end()
    provider.shutdown()
    assert receiver.requests()[0].headers.get("x-collector-token") == "user-secret"


def test_user_pipeline_headers_do_reach_that_pipelines_own_endpoint(receiver, monkeypatch):
    """When hud_otel builds the pipeline for the user's OTEL_EXPORTER_OTLP_ENDPOINT, its headers apply."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=abc")
    hud_sdk.register()
    with hud_sdk.sync_flow("to-the-collector"):
        pass
    assert hud_sdk.flush(10.0)
    assert {r.headers.get("x-collector-token") for r in receiver.requests()} == {"abc"}


def test_the_api_key_never_shows_in_logs_spans_metrics_or_reprs(receiver, caplog):
    """At DEBUG, through a failing export, the key appears in no log record, no exported span or metric
    (resource included) and no repr of hud_otel's objects; it does travel as the authorization header."""
    receiver.fail_next(1, "UNAUTHENTICATED", signal="traces")
    with caplog.at_level(logging.DEBUG):
        hud_sdk.register(endpoint=receiver.grpc_endpoint, api_key=KEY, headers={"x-tenant": "t1"})
        with hud_sdk.sync_flow("secret-keeping"):
            hud_sdk.set_context(step="one")
        hud_sdk.flush(10.0)
        with hud_sdk.sync_flow("secret-keeping"):
            hud_sdk.set_failure("Failed", reason="two")
        assert hud_sdk.flush(10.0)
        rt = STATE.runtime
        reprs = [
            repr(rt),
            repr(rt.pipeline),
            *(repr(p) for p in rt.pipeline.flushables + rt.pipeline.closables),
        ]
        hud_sdk.shutdown()
    assert any(r.status == "UNAUTHENTICATED" for r in receiver.requests())
    assert receiver.requests()[-1].headers["authorization"] == f"Bearer {KEY}"
    assert caplog.records, "nothing was logged: the test would prove nothing"
    logged = "\n".join(
        [caplog.text]
        + [r.getMessage() for r in caplog.records]
        + [repr(r.args) for r in caplog.records]
        + [repr(r.exc_info) for r in caplog.records]
    )
    assert KEY not in logged
    exported = repr(receiver.spans()) + repr(receiver.metrics())
    assert "secret-keeping" in exported and KEY not in exported
    assert all(KEY not in text for text in reprs)


def test_a_key_in_plain_text_to_a_remote_host_is_refused():
    """register() raises before anything is built when the key would cross the network unencrypted."""
    with pytest.raises(ValueError, match="plain text"):
        hud_sdk.register(api_key=KEY, endpoint="http://otlp.hud.example:4317")
    assert STATE.runtime is None
    with pytest.raises(ValueError, match="plain text"):
        hud_sdk.register(api_key=KEY, endpoint="http://otlp.hud.example:4318", protocol="http/protobuf")
    hud_sdk.register(api_key=KEY, endpoint="http://otlp.hud.example:4317", insecure=True)
    assert STATE.runtime is not None


def test_a_key_in_plain_text_set_by_variables_only_exports_nothing(monkeypatch, caplog):
    """From the environment alone register() does not raise: it records flows, sends nothing, says why."""
    port = free_port()
    monkeypatch.setenv("HUD_OTEL_API_KEY", KEY)
    monkeypatch.setenv("HUD_OTEL_ENDPOINT", f"http://otlp.hud.example:{port}")
    with caplog.at_level(logging.DEBUG):
        hud_sdk.register()
    assert STATE.runtime is not None
    assert "nothing is exported" in caplog.text and KEY not in caplog.text
    with hud_sdk.sync_flow("kept-local"):
        pass
    assert hud_sdk.flush(2.0)  # nothing to send, so nothing can fail


def test_otel_sdk_disabled_records_nothing_and_says_so_once(receiver, monkeypatch, caplog):
    """OTEL_SDK_DISABLED=true: register() builds nothing, says so once, and flows run untouched and silent."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with caplog.at_level(logging.DEBUG, logger="hud_otel"):
        hud_sdk.register(endpoint=receiver.grpc_endpoint)
        hud_sdk.register(endpoint=receiver.grpc_endpoint)

        @hud_sdk.sync_flow("disabled")
        def job():
            return 7

        assert job() == 7
        with hud_sdk.sync_flow("disabled-block"):
            hud_sdk.set_context(a=1)
    assert STATE.runtime is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["hud_otel: disabled by OTEL_SDK_DISABLED; no flow is recorded"]
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    time.sleep(0.2)
    assert receiver.request_count() == 0


def test_flush_returns_within_its_timeout_when_the_backend_is_down():
    """flush(timeout_s) waits no longer than asked even while the exporter retries a refused connection."""
    hud_sdk.register(endpoint=f"http://127.0.0.1:{free_port()}")
    with hud_sdk.sync_flow("unreachable"):
        pass
    started = time.monotonic()
    assert hud_sdk.flush(0.5) is False
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    hud_sdk.shutdown(0.5)
    assert time.monotonic() - started < 1.0


def test_delivery_resumes_after_the_backend_fails(receiver):
    """A backend answering UNAVAILABLE is retried: the flow still arrives once it answers again."""
    receiver.fail_next(1, "UNAVAILABLE", signal="traces")
    hud_sdk.register(endpoint=receiver.grpc_endpoint)
    with hud_sdk.sync_flow("retried"):
        pass
    assert hud_sdk.flush(10.0)
    assert [s.name for s in receiver.wait_for_spans(1)] == ["retried"]
    assert receiver.request_count(signal="traces", ok=False) == 1


def test_a_slow_backend_never_slows_the_application_and_the_queue_is_bounded(receiver):
    """With every export held for a second, 500 flows take no longer than without a backend; the bounded
    queue drops what does not fit instead of growing."""
    receiver.set_delay(1.0)
    hud_sdk.register(endpoint=receiver.grpc_endpoint, max_queue_size=16)
    started = time.monotonic()
    for _ in range(500):
        with hud_sdk.sync_flow("busy"):
            pass
    elapsed = time.monotonic() - started
    assert elapsed < 0.9, f"500 flows took {elapsed:.2f}s with a slow backend"
    hud_sdk.flush(5.0)
    assert receiver.span_total <= 2 * 16


def test_a_second_register_changes_nothing(receiver, caplog):
    """The second call warns and keeps the first configuration (its endpoint, its providers)."""
    hud_sdk.register(endpoint=receiver.grpc_endpoint)
    first = STATE.runtime
    with caplog.at_level(logging.WARNING, logger="hud_otel"):
        hud_sdk.register(endpoint="http://localhost:1", protocol="http/protobuf")
    assert STATE.runtime is first
    assert "already called" in caplog.text


class _OlderMeterProvider(MeterProvider):
    """An SDK from before MeterProvider.add_metric_reader existed."""

    add_metric_reader = None  # type: ignore[assignment]


def test_on_an_sdk_without_add_metric_reader_flow_metrics_still_reach_the_hud_endpoint(receiver):
    """Where a reader cannot be added to the user's meter provider, hud_otel's metrics get a provider of
    their own exporting to the Hud endpoint; the user's provider stays the global one."""
    user_mp = _OlderMeterProvider()
    metrics.set_meter_provider(user_mp)
    hud_sdk.register(endpoint=receiver.grpc_endpoint, tracer_provider=TracerProvider())
    with hud_sdk.sync_flow("older-sdk"):
        pass
    assert hud_sdk.flush(10.0)
    assert receiver.wait_for_metrics("hud.flow.duration")
    assert metrics.get_meter_provider() is user_mp
    user_mp.shutdown()


def test_register_again_after_shutdown_exports_again(receiver):
    """shutdown() then register(): the providers the first call built and installed are shut down and stay
    global (set once per process); the second call builds fresh ones instead of attaching to dead ones."""
    hud_sdk.register(endpoint=receiver.grpc_endpoint)
    first = trace.get_tracer_provider()
    with hud_sdk.sync_flow("first-life"):
        pass
    hud_sdk.shutdown()
    hud_sdk.register(endpoint=receiver.grpc_endpoint)
    with hud_sdk.sync_flow("second-life"):
        pass
    assert hud_sdk.flush(10.0)
    assert sorted(s.name for s in receiver.wait_for_spans(2)) == ["first-life", "second-life"]
    assert trace.get_tracer_provider() is first
    assert {m.name for m in receiver.metrics()} >= {"hud.flow.duration"}


def test_the_providers_hud_otel_builds_take_their_resource_from_the_environment(receiver, monkeypatch):
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES shape the resource of the providers hud_otel builds;
    an explicit service= wins over both."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,service.name=from-attributes"
    )
    hud_sdk.register(endpoint=receiver.grpc_endpoint)
    with hud_sdk.sync_flow("resourceful"):
        pass
    assert hud_sdk.flush(10.0)
    (span,) = receiver.wait_for_spans(1)
    assert (span.resource["service.name"], span.resource["deployment.environment"]) == ("from-env", "staging")
    assert {m.resource["service.name"] for m in receiver.metrics()} == {"from-env"}

    hud_sdk.shutdown()
    receiver.clear()
    hud_sdk.register(endpoint=receiver.grpc_endpoint, service="from-argument")
    with hud_sdk.sync_flow("resourceful"):
        pass
    assert hud_sdk.flush(10.0)
    (span,) = receiver.wait_for_spans(1)
    assert (span.resource["service.name"], span.resource["deployment.environment"]) == (
        "from-argument",
        "staging",
    )
