"""Scenario 7: flows delivered end to end to a loopback OTLP receiver, over gRPC and over HTTP.

For each transport, in this process, against ``hud_otel._receiver.OtlpReceiver`` on 127.0.0.1:
- full speed: as many flows as the application can start, then a flush; flows/s actually received;
- sustained: 5,000 flows/s for 10 s, paced; every flow must arrive (nothing dropped);
- overload: full speed against a receiver that answers slowly; what is not delivered is counted as
  dropped, and RSS before and after shows that the queue keeps memory bounded.

The pipeline is hud_otel's own (``register(endpoint=..., protocol=...)``: a bounded batch queue and the
OTLP exporter); what it drops it counts in ``hud.export.dropped``, which is read back and reported.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any, Callable

import psutil

import hud_otel

from ._harness import emit, row

QUICK = bool(os.environ.get("HUD_OTEL_BENCH_QUICK"))
RATE = 5000
SUSTAIN_S = 2.0 if QUICK else 10.0
BURST = 10_000 if QUICK else 20_000
OVERLOAD = 20_000 if QUICK else 50_000


def _pipeline(protocol: str, rx: Any) -> Any:
    """hud_otel's own export pipeline (``register(endpoint=...)``) towards the receiver.

    The meter provider is ours only so that ``hud.export.dropped`` can be read back here.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    hud_otel.register(
        endpoint=endpoint, protocol="grpc" if protocol == "grpc" else "http/protobuf", meter_provider=mp
    )
    return reader


def _counted_drops(reader: Any) -> int:
    """What hud_otel itself counted in ``hud.export.dropped`` (all reasons, cumulative)."""
    from hud_otel import _attributes as A

    total = 0
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == A.METRIC_EXPORT_DROPPED:
                    total += sum(int(p.value) for p in metric.data.data_points)
    return total


def _wait_delivered(rx: Any, sent: int, timeout_s: float = 30.0) -> tuple[int, float]:
    """Flush, then wait until every flow arrived or the receiver's count stopped moving for 5 s
    (an export that failed is retried with back-off: a late batch is delivered, not dropped).

    Returns the spans received and the ``perf_counter`` time the last of them arrived.
    """
    hud_otel.flush(timeout_s)
    deadline = time.perf_counter() + timeout_s
    last, changed_at = -1, time.perf_counter()
    while time.perf_counter() < deadline:
        got = int(rx.span_total)
        if got != last:
            last, changed_at = got, time.perf_counter()
        if got >= sent or time.perf_counter() - changed_at > 5.0:
            break
        time.sleep(0.005)
    return last, changed_at


def _job() -> Callable[[], None]:
    @hud_otel.sync_flow("delivery")
    def job() -> None:
        pass

    return job


def one_protocol(protocol: str) -> list[dict[str, Any]]:
    from hud_otel._receiver import OtlpReceiver

    rows: list[dict[str, Any]] = []
    proc = psutil.Process()
    with OtlpReceiver(
        grpc_port=0 if protocol == "grpc" else None,
        http_port=0 if protocol == "http" else None,
        max_spans=1000,
    ) as rx:
        reader = _pipeline(protocol, rx)
        job = _job()
        try:
            # Full speed.
            t0 = time.perf_counter()
            for _ in range(BURST):
                job()
            got, done = _wait_delivered(rx, BURST)
            elapsed = done - t0
            rows.append(
                row(
                    "7",
                    f"{protocol}: full speed, {BURST:,} flows",
                    None,
                    None,
                    "(info)",
                    None,
                    note=f"{got / elapsed:,.0f} flows/s delivered, {BURST - got:,} not delivered "
                    f"({_counted_drops(reader):,} counted dropped)",
                    flows_per_s=got / elapsed,
                    dropped=BURST - got,
                )
            )
            # Sustained, paced.
            rx.clear()
            counted0 = _counted_drops(reader)
            total = int(RATE * SUSTAIN_S)
            t0 = time.perf_counter()
            for i in range(total):
                due = t0 + i / RATE
                while True:
                    now = time.perf_counter()
                    if now >= due:
                        break
                    time.sleep(min(0.001, due - now))
                job()
            emitted_s = time.perf_counter() - t0
            got, _ = _wait_delivered(rx, total)
            rows.append(
                row(
                    "7",
                    f"{protocol}: {RATE:,} flows/s for {SUSTAIN_S:.0f} s",
                    None,
                    None,
                    "0 dropped",
                    got == total,
                    note=f"{got:,}/{total:,} delivered ({total / emitted_s:,.0f} flows/s offered, "
                    f"{_counted_drops(reader) - counted0:,} counted dropped)",
                    dropped=total - got,
                )
            )
            # Overload: the receiver takes 200 ms per request.
            rx.clear()
            counted0 = _counted_drops(reader)
            rx.set_delay(0.2)
            gc.collect()
            rss0 = proc.memory_info().rss
            for _ in range(OVERLOAD):
                job()
            rss1 = proc.memory_info().rss
            rx.set_delay(0.0)
            got, _ = _wait_delivered(rx, OVERLOAD)
            grew = (rss1 - rss0) / 2**20
            counted = _counted_drops(reader) - counted0
            rows.append(
                row(
                    "7",
                    f"{protocol}: overload, {OVERLOAD:,} flows, slow receiver",
                    None,
                    None,
                    "drops counted, memory bounded",
                    grew < 50 and counted == OVERLOAD - got,
                    note=f"{OVERLOAD - got:,} not delivered, {counted:,} counted dropped, RSS {grew:+.1f} MB",
                    dropped=OVERLOAD - got,
                    counted_dropped=counted,
                    rss_growth_mb=grew,
                )
            )
        finally:
            hud_otel.shutdown()
    return rows


def run() -> list[dict[str, Any]]:
    return one_protocol("grpc") + one_protocol("http")


if __name__ == "__main__":
    if sys.argv[1:] == ["run"]:
        emit(run())
