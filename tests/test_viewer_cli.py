"""The flow views and the ``hud-otel`` command line (serve, show, demo), end to end over real OTLP."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from rich.console import Console

from hud_otel import _attributes as A
from hud_otel._cli import main
from hud_otel._receiver import OtlpReceiver
from hud_otel._view import FlowView, percentile, render_detail, render_view

ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000  # nanoseconds


# --------------------------------------------------------------------------------------------------
# The view, fed through a real receiver by the real SDK and gRPC exporter


class Pipeline:
    """SDK -> OTLP/gRPC -> receiver -> FlowView, with flow spans written in the wire format of
    CONTRACT section 3 using the plain OpenTelemetry API and exact start and end times."""

    def __init__(self, rx: OtlpReceiver, view: FlowView) -> None:
        self.rx = rx
        self.view = view
        self.provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=rx.grpc_endpoint, insecure=True))
        )
        self.tracer: Tracer = self.provider.get_tracer("pipeline")
        self.sent = 0
        self.clock = 1_700_000_000_000 * MS

    def flow(
        self,
        name: str,
        duration_ms: float,
        *,
        flow_type: str = "custom",
        framework: str = "custom",
        outcome: Optional[str] = A.OUTCOME_SUCCESS,
        error: Optional[str] = None,
        description: Optional[str] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> None:
        attributes: dict[str, Any] = {
            A.FLOW_NAME: name,
            A.FLOW_TYPE: flow_type,
            A.FRAMEWORK: framework,
        }
        if outcome is not None:
            attributes[A.FLOW_OUTCOME] = outcome
        if error is not None:
            attributes[A.FLOW_ERROR] = error
            attributes[A.ERROR_TYPE] = error
        attributes.update(extra or {})
        queue = flow_type == "queue"
        self.clock += 1000 * MS  # each invocation starts a second after the previous one
        span = self.tracer.start_span(
            f"process {name}" if queue else name,
            kind=SpanKind.CONSUMER if queue else SpanKind.INTERNAL,
            attributes=attributes,
            start_time=self.clock,
        )
        if error is not None or description is not None:
            span.set_status(Status(StatusCode.ERROR, description))
        span.end(end_time=self.clock + int(duration_ms * MS))
        self.sent += 1

    def plain(self, name: str, attributes: Optional[dict[str, Any]] = None) -> None:
        self.tracer.start_span(name, attributes=attributes).end()
        self.sent += 1

    def view_now(self) -> Any:
        self.rx.wait_for_spans(self.sent)
        return self.view.snapshot()


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    view = FlowView()
    with OtlpReceiver(http_port=None) as rx:
        view.attach(rx)
        p = Pipeline(rx, view)
        yield p
        p.provider.shutdown()


def test_custom_flows_row(pipeline: Pipeline) -> None:
    """A Custom Flows row counts invocations, failures (cancelled is not one), error rate,
    linearly interpolated p50/p95, max and the most frequent errors, ties broken by name."""
    runs = [
        (10, A.OUTCOME_SUCCESS, None),
        (20, A.OUTCOME_FAILURE, "KeyError"),
        (30, A.OUTCOME_FAILURE, "KeyError"),
        (40, A.OUTCOME_FAILURE, "Timeout"),
        (50, A.OUTCOME_CANCELLED, None),
        (60, A.OUTCOME_SUCCESS, None),
    ]
    for duration, outcome, error in runs:
        pipeline.flow("nightly-report", duration, outcome=outcome, error=error)
    pipeline.flow("cleanup", 5, framework="cron")

    view = pipeline.view_now()
    assert view["custom_flows"] == [
        {
            "flow": "cleanup",
            "framework": "cron",
            "invocations": 1,
            "failures": 0,
            "cancelled": 0,
            "error_rate": 0.0,
            "duration_ms": {"p50": 5.0, "p95": 5.0, "max": 5.0},
            "top_errors": [],
        },
        {
            "flow": "nightly-report",
            "framework": "custom",
            "invocations": 6,
            "failures": 3,
            "cancelled": 1,
            "error_rate": 0.5,
            "duration_ms": {"p50": 35.0, "p95": 57.5, "max": 60.0},
            "top_errors": [{"error": "KeyError", "count": 2}, {"error": "Timeout", "count": 1}],
        },
    ]
    assert view["queues"] == []


def test_queues_row(pipeline: Pipeline) -> None:
    """A Queues row sums hud.queue.message_count (1 when absent), takes processing percentiles from
    the span duration and queue-wait percentiles from hud.queue.e2e_duration_ms."""
    system = A.MESSAGING_SYSTEMS["sqs"]
    runs = [(5, 3, 100.0), (15, None, 200.0), (25, 2, 300.0), (35, 10, None)]
    for duration, count, wait in runs:
        extra: dict[str, Any] = {A.MESSAGING_SYSTEM: system}
        if count is not None:
            extra[A.QUEUE_MESSAGE_COUNT] = count
        if wait is not None:
            extra[A.QUEUE_E2E_DURATION_MS] = wait
        pipeline.flow("orders", duration, flow_type="queue", framework="sqs", extra=extra)
    pipeline.flow("orders", 45, flow_type="queue", framework="sqs", outcome=A.OUTCOME_FAILURE, error="Boom")

    view = pipeline.view_now()
    assert view["queues"] == [
        {
            "flow": "orders",
            "framework": "sqs",
            "messaging_system": system,
            "invocations": 5,
            "failures": 1,
            "cancelled": 0,
            "error_rate": 0.2,
            "messages": 3 + 1 + 2 + 10 + 1,
            "processing_ms": {"p50": 25.0, "p95": 43.0, "max": 45.0},
            "queue_wait_ms": {"p50": 200.0, "p95": 290.0, "max": 300.0},
            "queue_wait_samples": 3,
            "top_errors": [{"error": "Boom", "count": 1}],
        }
    ]
    assert view["custom_flows"] == []


def test_spans_that_are_not_flows_are_ignored(pipeline: Pipeline) -> None:
    """Spans of an application without hud_otel, child spans that only carry hud.flow.name, spans
    with an unknown flow type and demoted flows are accepted, counted, and kept out of the tables."""
    pipeline.plain("GET /health", {"http.route": "/health"})
    pipeline.plain("SELECT", {A.FLOW_NAME: "nightly-report"})
    pipeline.plain("odd", {A.FLOW_TYPE: "batch", A.FLOW_NAME: "odd"})
    pipeline.flow("inner", 1, extra={A.FLOW_DEMOTED_REASON: A.REASON_NESTED})
    pipeline.flow("real", 2)

    view = pipeline.view_now()
    assert [row["flow"] for row in view["custom_flows"]] == ["real"]
    assert view["totals"] == {
        "spans": 5,
        "flow_spans": 1,
        "ignored_spans": 3,
        "demoted_spans": 1,
        "untracked_flow_spans": 0,
    }


def test_outcome_falls_back_to_the_span_status(pipeline: Pipeline) -> None:
    """A flow span without hud.flow.outcome is a failure when its status is ERROR, named by the
    status description when no error attribute says more."""
    pipeline.flow("legacy", 3, outcome=None, description="disk full")
    pipeline.flow("legacy", 4, outcome=None)

    (row,) = pipeline.view_now()["custom_flows"]
    assert (row["invocations"], row["failures"]) == (2, 1)
    assert row["top_errors"] == [{"error": "disk full", "count": 1}]


def _skipped_meter(
    rx: OtlpReceiver, instance: str, temporality: AggregationTemporality
) -> tuple[MeterProvider, Any]:
    exporter = OTLPMetricExporter(
        endpoint=rx.grpc_endpoint, insecure=True, preferred_temporality={Counter: temporality}
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "jobs", "service.instance.id": instance}),
    )
    counter = provider.get_meter(A.METER_NAME).create_counter(A.METRIC_SKIPPED)
    return provider, counter


def test_skipped_counts_cumulative_and_delta_streams(pipeline: Pipeline) -> None:
    """hud.flow.skipped by reason: a cumulative stream counts its latest value (not the sum of its
    exports), separate processes add up, delta exports are summed."""
    rx, view = pipeline.rx, pipeline.view
    first, first_counter = _skipped_meter(rx, "a", AggregationTemporality.CUMULATIVE)
    first_counter.add(1, {A.SKIP_REASON: A.REASON_NESTED})
    first.force_flush()
    first_counter.add(2, {A.SKIP_REASON: A.REASON_NESTED})
    first_counter.add(1, {A.SKIP_REASON: A.REASON_NAME_CAP})
    first.force_flush()  # cumulative: nested=3 now, not 1 + 3

    second, second_counter = _skipped_meter(rx, "b", AggregationTemporality.CUMULATIVE)
    second_counter.add(2, {A.SKIP_REASON: A.REASON_NESTED})
    second.force_flush()

    delta, delta_counter = _skipped_meter(rx, "c", AggregationTemporality.DELTA)
    delta_counter.add(1, {A.SKIP_REASON: A.REASON_IN_REQUEST})
    delta.force_flush()
    delta_counter.add(4, {A.SKIP_REASON: A.REASON_IN_REQUEST})
    delta.force_flush()
    for provider in (first, second, delta):
        provider.shutdown()  # a last export each: cumulative repeats, delta adds nothing

    assert view.snapshot()["skipped"] == {
        A.REASON_IN_REQUEST: 5,
        A.REASON_NAME_CAP: 1,
        A.REASON_NESTED: 5,
    }


def test_detail_lists_recent_invocations_newest_first(pipeline: Pipeline) -> None:
    """The detail view of a flow name has one entry per (flow type, framework), each with its
    summary row and recent invocations newest first: outcome, duration, error, context without
    the hud.context. prefix, queue data and the service; an unknown name gives None."""
    pipeline.flow("sync", 10, extra={"hud.context.batch_id": 7, "hud.context.tags": ["a", "b"]})
    pipeline.flow(
        "sync",
        20,
        outcome=A.OUTCOME_FAILURE,
        error="BatchRejected",
        description="too big",
        extra={"hud.context.batch_id": 8},
    )
    pipeline.flow(
        "sync",
        30,
        flow_type="queue",
        framework="kafka",
        extra={A.QUEUE_MESSAGE_COUNT: 4, A.QUEUE_E2E_DURATION_MS: 12.25},
    )
    pipeline.view_now()

    detail = pipeline.view.detail("sync")
    assert detail is not None
    assert detail["flow"] == "sync"
    custom, queue = detail["entries"]
    assert (custom["flow_type"], custom["framework"]) == ("custom", "custom")
    assert custom["summary"]["invocations"] == 2
    newest, oldest = custom["recent"]
    trace_ids = {s.attributes.get("hud.context.batch_id"): s.trace_id for s in pipeline.rx.spans()}
    assert newest == {
        "trace_id": trace_ids[8],
        "span_id": newest["span_id"],
        "start_time": newest["start_time"],
        "duration_ms": 20.0,
        "outcome": "failure",
        "error": "BatchRejected",
        "status_description": "too big",
        "context": {"batch_id": 8},
        "message_count": None,
        "queue_wait_ms": None,
        "service": "billing",
    }
    assert newest["start_time"] > oldest["start_time"]
    assert newest["start_time"].endswith("Z")
    assert oldest["context"] == {"batch_id": 7, "tags": ["a", "b"]}
    assert (oldest["outcome"], oldest["error"]) == ("success", None)
    (queued,) = queue["recent"]
    assert (queue["framework"], queued["message_count"], queued["queue_wait_ms"]) == ("kafka", 4, 12.25)
    assert pipeline.view.detail("nope") is None


def test_memory_of_the_view_is_bounded(pipeline: Pipeline) -> None:
    """Past max_flows new flows are only counted; each flow keeps its last recent_per_flow
    invocations for the detail view while its counts stay exact."""
    view = FlowView(max_flows=1, recent_per_flow=2)
    pipeline.rx.add_listener(on_spans=view.add_spans)
    for duration in (1, 2, 3):
        pipeline.flow("kept", duration)
    pipeline.flow("over-the-cap", 1)
    pipeline.view_now()

    snapshot = view.snapshot()
    assert [(r["flow"], r["invocations"]) for r in snapshot["custom_flows"]] == [("kept", 3)]
    assert snapshot["totals"]["untracked_flow_spans"] == 1
    detail = view.detail("kept")
    assert detail is not None
    assert [inv["duration_ms"] for inv in detail["entries"][0]["recent"]] == [3.0, 2.0]


def test_percentile_interpolates_between_ranks() -> None:
    """percentile() matches the standard library's inclusive quantiles (NumPy's default)."""
    data = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0])
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    assert percentile(data, 50) == pytest.approx(cuts[49])
    assert percentile(data, 95) == pytest.approx(cuts[94])
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0


def test_tables_render_the_view(pipeline: Pipeline) -> None:
    """The rich tables show the flows, counts, error rate, durations, errors and skipped reasons
    of the view they are given; empty tables say so; at 80 columns the errors get their own table
    and nothing is wider than the console."""
    empty = Console(record=True, width=160)
    empty.print(render_view(pipeline.view.snapshot()))
    assert "no custom flows received yet" in empty.export_text()

    pipeline.flow("nightly-report", 10)
    pipeline.flow("nightly-report", 30, outcome=A.OUTCOME_FAILURE, error="KeyError")
    pipeline.flow("orders", 5, flow_type="queue", framework="sqs", extra={A.QUEUE_E2E_DURATION_MS: 1500.0})
    console = Console(record=True, width=160)
    console.print(render_view(pipeline.view_now()))
    text = console.export_text()
    for expected in ("Custom Flows", "Queues", "nightly-report", "50.0%", "20.0ms", "KeyError x1"):
        assert expected in text
    assert "orders" in text and "1.50s" in text

    narrow = Console(record=True, width=80)
    narrow.print(render_view(pipeline.view.snapshot()))
    text = narrow.export_text()
    assert "Most frequent errors" in text and "nightly-report" in text and "KeyError" in text
    assert max(len(line) for line in text.splitlines()) <= 80

    detail = pipeline.view.detail("nightly-report")
    assert detail is not None
    console = Console(record=True, width=160)
    console.print(render_detail(detail))
    text = console.export_text()
    assert "KeyError" in text and "failure" in text and "30.0ms" in text


# --------------------------------------------------------------------------------------------------
# The command line, as separate processes


def _env() -> dict[str, str]:
    # The children must import this checkout, and must not pick up an OTLP setup from the shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "160"
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hud_otel", *args]


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no line from the subprocess within {timeout}s; stderr:\n{err}")
    return lines[0]


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[subprocess.Popen[str], dict[str, Any]]]]:
    """Start `hud-otel serve --json` on free ports; returns the process and its listening line."""
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen(
            _cli("serve", "--json", "--grpc-port", "0", "--http-port", "0", *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        procs.append(proc)
        return proc, json.loads(_read_line(proc, timeout=20))

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# One process sending flows through hud_otel itself, over the protocol it is given. It prints, as
# ground truth, the flow spans it produced as the SDK saw them.
SENDER = textwrap.dedent(
    """
    import json, sys, time
    from datetime import datetime, timedelta, timezone

    import hud_otel
    from hud_otel import _attributes as A
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    protocol, endpoint = sys.argv[1], sys.argv[2]
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        spans_out = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        metrics_out = OTLPMetricExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans_out = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
        metrics_out = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics")

    resource = Resource.create({"service.name": "sender-" + protocol})
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tp.add_span_processor(SimpleSpanProcessor(spans_out))
    reader = PeriodicExportingMetricReader(metrics_out, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    hud_otel.register(tracer_provider=tp, meter_provider=mp)

    @hud_otel.sync_flow("nightly-report")
    def report(i):
        hud_otel.set_context(run=i, protocol=protocol)
        time.sleep(0.002 * (i + 1))
        if i == 3:
            raise KeyError(i)
        if i == 4:
            hud_otel.set_failure("BatchRejected", reason="too big")
        if i == 0:
            with hud_otel.sync_flow("nested-attempt"):  # skipped: reason "nested"
                pass

    for i in range(5):
        try:
            report(i)
        except KeyError:
            pass

    for j in range(3):
        enqueued = datetime.now(timezone.utc) - timedelta(milliseconds=100 * (j + 1))
        with hud_otel.sync_flow(
            "orders",
            flow_type=hud_otel.FlowType.QUEUE,
            framework="sqs",
            enqueued_at=enqueued,
            message_count=j + 1,
        ):
            time.sleep(0.001 * (j + 1))

    tp.get_tracer("app").start_span("GET /health").end()  # not a flow
    assert hud_otel.flush(10)
    truth = [
        {
            "flow": s.attributes[A.FLOW_NAME],
            "type": s.attributes[A.FLOW_TYPE],
            "duration_ms": (s.end_time - s.start_time) / 1e6,
            "e2e_ms": s.attributes.get(A.QUEUE_E2E_DURATION_MS),
        }
        for s in memory.get_finished_spans()
        if A.FLOW_TYPE in (s.attributes or {})
    ]
    print(json.dumps(truth))
    hud_otel.shutdown()
    tp.shutdown()
    mp.shutdown()
    """
)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _poll_view(http_endpoint: str, ready: Callable[[Any], bool], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    view = _get_json(http_endpoint + "/api/view")
    while not ready(view) and time.monotonic() < deadline:
        time.sleep(0.05)
        view = _get_json(http_endpoint + "/api/view")
    return view


def _quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94]


def test_serve_aggregates_flows_sent_over_grpc_and_http(serve: Any) -> None:
    """`hud-otel serve --json` on free ports receives flows from two other processes, one over gRPC
    and one over HTTP; `show` reads one flow from it; on SIGINT it exits 0 and prints the final
    view: counts, error rate, percentiles and queue wait computed from what the senders produced,
    skipped flows summed over both, plain spans ignored."""
    proc, listening = serve()
    assert listening["event"] == "listening"
    assert listening["grpc_endpoint"] == f"http://127.0.0.1:{listening['grpc_port']}"
    senders = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, protocol, listening[f"{protocol}_endpoint"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for protocol in ("grpc", "http")
    ]
    truth: list[dict[str, Any]] = []
    for sender in senders:
        out, err = sender.communicate(timeout=30)
        assert sender.returncode == 0, err
        truth += json.loads(out)

    view = _poll_view(
        listening["http_endpoint"],
        lambda v: v["totals"]["flow_spans"] == len(truth) and v["skipped"].get("nested") == 2,
    )

    shown = subprocess.run(
        _cli("show", "nightly-report", "--endpoint", listening["http_endpoint"], "--json"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=20,
    )
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["entries"]
    assert len(entry["recent"]) == 10
    assert {inv["context"]["protocol"] for inv in entry["recent"]} == {"grpc", "http"}
    assert {inv["service"] for inv in entry["recent"]} == {"sender-grpc", "sender-http"}
    missing = subprocess.run(
        _cli("show", "no-such-flow", "--endpoint", listening["http_endpoint"]),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=20,
    )
    assert missing.returncode == 1 and "no-such-flow" in missing.stderr

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final == view  # nothing arrived after the poll

    report = [t["duration_ms"] for t in truth if t["flow"] == "nightly-report"]
    p50, p95 = _quantiles(report)
    (row,) = final["custom_flows"]
    assert row == {
        "flow": "nightly-report",
        "framework": "custom",
        "invocations": 10,
        "failures": 4,
        "cancelled": 0,
        "error_rate": 0.4,
        "duration_ms": {
            "p50": pytest.approx(p50, abs=1e-3),
            "p95": pytest.approx(p95, abs=1e-3),
            "max": pytest.approx(max(report), abs=1e-3),
        },
        "top_errors": [{"error": "BatchRejected", "count": 2}, {"error": "KeyError", "count": 2}],
    }

    processing = [t["duration_ms"] for t in truth if t["flow"] == "orders"]
    waits = [t["e2e_ms"] for t in truth if t["flow"] == "orders"]
    (queue,) = final["queues"]
    proc_p50, proc_p95 = _quantiles(processing)
    wait_p50, wait_p95 = _quantiles(waits)
    assert queue == {
        "flow": "orders",
        "framework": "sqs",
        "messaging_system": A.MESSAGING_SYSTEMS["sqs"],
        "invocations": 6,
        "failures": 0,
        "cancelled": 0,
        "error_rate": 0.0,
        "messages": 2 * (1 + 2 + 3),
        "processing_ms": {
            "p50": pytest.approx(proc_p50, abs=1e-3),
            "p95": pytest.approx(proc_p95, abs=1e-3),
            "max": pytest.approx(max(processing), abs=1e-3),
        },
        "queue_wait_ms": {
            "p50": pytest.approx(wait_p50, abs=1e-3),
            "p95": pytest.approx(wait_p95, abs=1e-3),
            "max": pytest.approx(max(waits), abs=1e-3),
        },
        "queue_wait_samples": 6,
        "top_errors": [],
    }
    assert 200 <= wait_p50 < 1000  # enqueued 100-300 ms before each flow began
    assert final["skipped"] == {"nested": 2}
    assert final["totals"]["ignored_spans"] == 2  # one GET /health from each sender


def test_serve_stops_cleanly_on_sigterm(serve: Any) -> None:
    """SIGTERM stops `serve` like Ctrl-C: exit 0 and a final, empty view."""
    proc, _ = serve()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert (final["custom_flows"], final["queues"], final["skipped"]) == ([], [], {})


def test_serve_on_a_taken_port_fails_with_a_message() -> None:
    """`serve` on a port already in use exits 1 and says why, instead of sharing the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            _cli("serve", "--grpc-port", "0", "--http-port", str(port)),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=20,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_show_without_a_server_fails_with_a_message() -> None:
    """`show` against an endpoint where nothing listens exits 1 and says it cannot reach serve."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert main(["show", "x", "--endpoint", f"http://127.0.0.1:{port}"]) == 1


def test_no_command_prints_usage() -> None:
    """`hud-otel` without a command prints usage and returns 2; `python -m hud_otel --help` works."""
    assert main([]) == 2
    result = subprocess.run(_cli("--help"), capture_output=True, text=True, env=_env(), timeout=20)
    assert result.returncode == 0 and "serve" in result.stdout and "demo" in result.stdout


def test_without_the_viewer_extra_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a module of the `viewer` extra missing (None in sys.modules makes it unimportable), a
    command exits 1 naming the module and the extra to install instead of a traceback."""
    monkeypatch.setitem(sys.modules, "grpc", None)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "grpc" in err and "hud-otel[viewer]" in err


DEMO_EXAMPLES = {
    "jobs.py": """
        from datetime import datetime, timedelta, timezone
        import hud_otel as hud_sdk

        @hud_sdk.sync_flow("nightly-report")
        def report(i):
            hud_sdk.set_context(run=i)
            if i == 2:
                raise ValueError("bad day")

        def main():
            print("this line must not break --json")
            for i in range(3):
                try:
                    report(i)
                except ValueError:
                    pass
            with hud_sdk.sync_flow(
                "orders",
                flow_type=hud_sdk.FlowType.QUEUE,
                framework="rabbitmq",
                enqueued_at=datetime.now(timezone.utc) - timedelta(seconds=1),
                message_count=5,
            ):
                with hud_sdk.sync_flow("nested"):
                    pass

        if __name__ == "__main__":
            hud_sdk.register()
            main()
    """,
    "async_job.py": """
        import asyncio
        import hud_otel as hud_sdk

        @hud_sdk.async_flow("async-job")
        async def job():
            await asyncio.sleep(0)

        async def main():
            await job()
            await job()
    """,
    "broken.py": """
        def main():
            raise RuntimeError("this example is broken")
    """,
    "no_main.py": """
        VALUE = 1
    """,
    "_helper.py": """
        raise AssertionError("helpers are not examples")
    """,
}


def _run_demo(
    *args: str, cwd: Path, env: Optional[dict[str, str]] = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        _cli("demo", "--json", *args),
        capture_output=True,
        text=True,
        env={**_env(), **(env or {})},
        cwd=cwd,
        timeout=60,
    )
    return result, time.monotonic() - started


def test_demo_runs_examples_and_reports_each(tmp_path: Path) -> None:
    """`demo --json` runs each example's main() (sync or async) with hud_otel exporting to its
    in-process receiver, reports a broken example without stopping, keeps example output off
    stdout, and prints the view of the flows, queue waits and skipped flows; exit 0. Export settings
    in the environment (a Hud endpoint and key) are ignored, by name, never echoing the key."""
    for name, source in DEMO_EXAMPLES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    elsewhere = {"HUD_OTEL_ENDPOINT": "http://192.0.2.1:4317", "HUD_OTEL_API_KEY": "key-must-stay-secret"}
    result, elapsed = _run_demo("--examples", str(tmp_path), cwd=tmp_path, env=elsewhere)
    assert result.returncode == 0, result.stderr
    assert elapsed < 30
    view = json.loads(result.stdout)
    assert [(e["example"], e["ok"]) for e in view["examples"]] == [
        ("async_job.py", True),
        ("broken.py", False),
        ("jobs.py", True),
        ("no_main.py", True),
    ]
    assert "this example is broken" in view["examples"][1]["error"]
    custom = {row["flow"]: row for row in view["custom_flows"]}
    assert custom["nightly-report"]["invocations"] == 3
    assert custom["nightly-report"]["top_errors"] == [{"error": "ValueError", "count": 1}]
    assert custom["async-job"]["invocations"] == 2
    (queue,) = view["queues"]
    assert (queue["flow"], queue["messages"], queue["queue_wait_samples"]) == ("orders", 5, 1)
    assert queue["queue_wait_ms"]["p50"] >= 1000
    assert view["skipped"] == {"nested": 1}
    assert "this line must not break --json" in result.stderr
    assert "HUD_OTEL_API_KEY" in result.stderr
    assert "key-must-stay-secret" not in result.stderr + result.stdout


def test_demo_on_the_project_examples() -> None:
    """`hud-otel demo --json` from the checkout runs every examples/*.py without error, shows their
    flows and exits 0 in well under 30 seconds."""
    examples = sorted(p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
    if not examples:
        pytest.skip("examples/ has no example yet")
    result, elapsed = _run_demo(cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert elapsed < 30
    view = json.loads(result.stdout)
    assert [e["example"] for e in view["examples"]] == examples
    assert [e for e in view["examples"] if not e["ok"]] == []
    assert view["custom_flows"] or view["queues"]
