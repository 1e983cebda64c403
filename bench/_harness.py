"""What every scenario shares: side-by-side timing, the providers it measures on, and result rows.

Timing rule: the path under test and its baseline run in the same process, in interleaved rounds
(the order alternates every round), each round timing a loop of ``n`` operations; the reported number
is the median of the rounds, in nanoseconds per operation. Nothing here asserts an absolute time.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

# A loop runner: performs ``n`` operations of the thing measured.
Loop = Callable[[int], None]


class DropSpanExporter(SpanExporter):
    """Accepts every batch and keeps nothing: the export pipeline without a network."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class DropMetricExporter(MetricExporter):
    """A real periodic reader's exporter that drops what it is given."""

    def __init__(self, temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> None:
        from opentelemetry.sdk.metrics import Counter, Histogram

        super().__init__(preferred_temporality={Counter: temporality, Histogram: temporality})
        self.exports = 0

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def bare_tracer_provider() -> TracerProvider:
    """An SDK provider with the batch processor and a dropping exporter, nothing else."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropSpanExporter()))
    return provider


def metered_provider(interval_ms: int = 60_000) -> MeterProvider:
    """A meter provider with a real periodic reader attached (its exporter drops)."""
    reader = PeriodicExportingMetricReader(DropMetricExporter(), export_interval_millis=interval_ms)
    return MeterProvider(metric_readers=[reader])


def compare(
    candidates: dict[str, Loop],
    *,
    n: int,
    rounds: int,
    warmup: int = 1,
) -> dict[str, float]:
    """Median ns/op of each candidate over ``rounds`` interleaved rounds of ``n`` operations."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name](max(1, n // 4))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            loop = candidates[name]
            start = time.perf_counter_ns()
            loop(n)
            samples[name].append((time.perf_counter_ns() - start) / n)
    return {name: statistics.median(values) for name, values in samples.items()}


def row(
    scenario: str,
    case: str,
    ours_ns: Optional[float],
    base_ns: Optional[float],
    target: str,
    ok: Optional[bool],
    *,
    baseline: str = "",
    value: Optional[float] = None,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One line of the results table."""
    ratio = value
    if ratio is None and ours_ns is not None and base_ns:
        ratio = ours_ns / base_ns
    return {
        "scenario": scenario,
        "case": case,
        "ours_ns": ours_ns,
        "baseline": baseline,
        "base_ns": base_ns,
        "ratio": ratio,
        "target": target,
        "ok": ok,
        "note": note,
        **extra,
    }


def emit(rows: list[dict[str, Any]]) -> None:
    """A scenario subprocess hands its rows to the runner as one JSON line on stdout."""
    sys.stdout.write("BENCH-ROWS " + json.dumps(rows) + "\n")
    sys.stdout.flush()
