"""Concurrency: one flow object used by many threads and tasks at once tracks every call on its own.

32 threads x 2,000 flows each, and 10,000 concurrent asyncio tasks, every flow with ``set_context``:
every flow is exported exactly once, carries only its own context values (none cross to another flow),
and nothing is left active afterwards. The flows go through the real SDK pipeline (tracer provider,
span processor, metric reader) into a small real exporter that keeps only what the checks need, so
that 64,000 finished spans do not have to stay in memory.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel._invocation import _FRAME

THREADS = 32
FLOWS_PER_THREAD = 2_000
TASKS = 10_000


class ContextExporter(SpanExporter):
    """Keeps (span name, outcome, is root, hud.context.* items) of every exported span."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[tuple[str, Any, bool, tuple[tuple[str, Any], ...]]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = []
        for span in spans:
            attrs = span.attributes or {}
            context = tuple(
                sorted(
                    (k[len(A.CONTEXT_PREFIX) :], v)
                    for k, v in attrs.items()
                    if k.startswith(A.CONTEXT_PREFIX)
                )
            )
            rows.append((span.name, attrs.get(A.FLOW_OUTCOME), span.parent is None, context))
        with self._lock:
            self.records.extend(rows)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Pipeline:
    """hud_otel registered on a real SDK tracer and meter provider."""

    def __init__(self) -> None:
        self.exporter = ContextExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def duration_counts(self) -> Counter[str]:
        """``hud.flow.duration`` data point counts by flow name."""
        counts: Counter[str] = Counter()
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == A.METRIC_DURATION:
                        for point in metric.data.data_points:
                            counts[str(point.attributes[A.FLOW_NAME])] += point.count
        return counts


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    pipe = Pipeline()
    hud.register(tracer_provider=pipe.tracer_provider, meter_provider=pipe.meter_provider)
    yield pipe
    hud.shutdown()
    pipe.tracer_provider.shutdown()
    pipe.meter_provider.shutdown()


def _nothing_active() -> bool:
    return _FRAME.get() is None and not trace.get_current_span().get_span_context().is_valid


def test_32_threads_share_flow_objects_without_crossing_context(pipeline):
    """32 threads x 2,000 flows through one shared decorated function, one shared ``with`` object and
    ``start_flow``/``end_flow``, each flow with ``set_context``: all 64,000 are exported exactly once,
    each with only its own thread and sequence values, as root spans, with one duration point each,
    and no thread is left with an active flow."""
    shared_with = hud.sync_flow("threads-with")

    @hud.sync_flow("threads-decorated")
    def decorated(thread: int, seq: int) -> int:
        hud.set_context(thread=thread, seq=seq)
        hud.set_context(echo=f"{thread}:{seq}")  # a second call merges with the first
        return seq

    leftovers: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(thread: int) -> None:
        try:
            start.wait()
            for seq in range(FLOWS_PER_THREAD):
                kind = seq % 3
                if kind == 0:
                    assert decorated(thread, seq) == seq
                elif kind == 1:
                    with shared_with:
                        hud.set_context(thread=thread, seq=seq)
                        hud.set_context(echo=f"{thread}:{seq}")
                else:
                    hud.start_flow("threads-manual")
                    hud.set_context(thread=thread, seq=seq)
                    hud.set_context(echo=f"{thread}:{seq}")
                    hud.end_flow()
            if not _nothing_active():
                leftovers.append(thread)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - began
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert leftovers == []

    records = pipeline.exporter.records
    total = THREADS * FLOWS_PER_THREAD
    assert len(records) == total
    seen = Counter()
    names = {0: "threads-decorated", 1: "threads-with", 2: "threads-manual"}
    for name, outcome, is_root, context in records:
        ctx = dict(context)
        assert set(ctx) == {"thread", "seq", "echo"}, context
        thread, seq = ctx["thread"], ctx["seq"]
        assert ctx["echo"] == f"{thread}:{seq}", context  # no value from another flow
        assert name == names[seq % 3]
        assert (outcome, is_root) == (A.OUTCOME_SUCCESS, True)
        seen[(thread, seq)] += 1
    assert len(seen) == total and set(seen.values()) == {1}
    per_thread = Counter(names[seq % 3] for seq in range(FLOWS_PER_THREAD))
    assert pipeline.duration_counts() == {name: n * THREADS for name, n in per_thread.items()}
    print(f"\n[figures] threads: {THREADS}x{FLOWS_PER_THREAD} = {total} flows in {elapsed:.2f}s")


def test_10000_concurrent_tasks_keep_their_own_context(pipeline):
    """10,000 asyncio tasks run at once, interleaving at every step, through one shared decorated
    coroutine, one shared ``async with`` object and an async generator: every flow is exported exactly
    once with only its own task's values, a flow started inside a task's flow is skipped as nested
    without touching the parent's values, and no task (nor the loop) is left with an active flow."""
    shared_with = hud.async_flow("tasks-with")

    @hud.async_flow("tasks-decorated")
    async def decorated(task: int) -> int:
        hud.set_context(task=task)
        await asyncio.sleep(0)
        with hud.sync_flow("tasks-nested"):  # skipped: nested; its context goes to this flow
            hud.set_context(echo=task)
        await asyncio.sleep(0)
        return task

    @hud.async_flow("tasks-generator")
    async def generator(task: int) -> Any:
        hud.set_context(task=task)
        await asyncio.sleep(0)
        yield task
        hud.set_context(echo=task)
        yield task

    async def one(task: int, gate: asyncio.Event) -> bool:
        await gate.wait()  # all 10,000 are in flight before any flow starts
        kind = task % 3
        if kind == 0:
            assert await decorated(task) == task
        elif kind == 1:
            async with shared_with:
                hud.set_context(task=task)
                await asyncio.sleep(0)
                hud.set_context(echo=task)
                await asyncio.sleep(0)
        else:
            assert [x async for x in generator(task)] == [task, task]
        return _nothing_active()

    async def main() -> list[bool]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(one(i, gate)) for i in range(TASKS)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
        assert _nothing_active()
        return results

    began = time.perf_counter()
    results = asyncio.run(main())
    elapsed = time.perf_counter() - began
    assert all(results)
    assert _nothing_active()

    records = pipeline.exporter.records
    assert len(records) == TASKS
    names = {0: "tasks-decorated", 1: "tasks-with", 2: "tasks-generator"}
    seen: Counter[int] = Counter()
    for name, outcome, is_root, context in records:
        ctx = dict(context)
        assert ctx == {"task": ctx.get("task"), "echo": ctx.get("task")}, context
        assert name == names[ctx["task"] % 3]
        assert (outcome, is_root) == (A.OUTCOME_SUCCESS, True)
        seen[ctx["task"]] += 1
    assert set(seen) == set(range(TASKS)) and set(seen.values()) == {1}
    assert sum(pipeline.duration_counts().values()) == TASKS
    print(f"\n[figures] asyncio: {TASKS} concurrent tasks in {elapsed:.2f}s")
