"""Scenario 8: RSS growth after 1,000,000 flows over 1,000 names, each with ``set_context``.

Runs in its own process. The first pass over all names fills every per-name cache (definitions, metric
attribute sets, aggregation cells); growth is measured from there to the end, after the span pipeline
has drained, so what is left is what the flows themselves keep.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

import psutil

import hud_otel

from ._harness import DropSpanExporter, emit, row

NAMES = 1000
FLOWS = 100_000 if os.environ.get("HUD_OTEL_BENCH_QUICK") else 1_000_000
LIMIT_MB = 20.0


def run() -> list[dict[str, Any]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from ._harness import DropMetricExporter

    exporter = DropSpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(exporter))
    # A real reader collecting every second, so the metric path's state is exercised while it grows.
    mp = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(DropMetricExporter(), export_interval_millis=1000)]
    )
    hud_otel.register(tracer_provider=tp, meter_provider=mp, max_flow_names=NAMES)
    names = [f"job-{i}" for i in range(NAMES)]
    proc = psutil.Process()

    def flows(start: int, count: int) -> None:
        for i in range(start, start + count):
            with hud_otel.sync_flow(names[i % NAMES]):
                hud_otel.set_context(item=i, tenant="acme", ok=True)

    flows(0, 20 * NAMES)
    tp.force_flush()
    mp.force_flush()
    gc.collect()
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    flows(0, FLOWS)
    elapsed = time.perf_counter() - t0
    tp.force_flush()
    mp.force_flush()
    gc.collect()
    after = proc.memory_info().rss
    growth_mb = (after - before) / 2**20
    hud_otel.shutdown()
    return [
        row(
            "8",
            f"RSS growth, {FLOWS:,} flows / {NAMES} names",
            elapsed * 1e9 / FLOWS,
            None,
            f"< {LIMIT_MB:.0f} MB",
            growth_mb < LIMIT_MB if FLOWS == 1_000_000 else None,
            value=None,
            note=f"+{growth_mb:.1f} MB (RSS {after / 2**20:.0f} MB)",
            growth_mb=growth_mb,
            rss_mb=after / 2**20,
            flows=FLOWS,
        )
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["run"]:
        emit(run())
