"""The aggregated flow-metrics path (hud_otel._metrics) collects exactly what the stock SDK path would.

Flows record into per-attribute-set cells and the cells are merged into the SDK's aggregations when a
reader collects. These tests compare whole data points (count, sum, min, max, buckets) from real SDK
readers, cumulative and delta, one reader or two, against known values, and check the fallback to the
stock instruments when a view changes the aggregation.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider

import hud_otel as hud_sdk
from hud_otel._metrics import _SELF_TEST, FlowMetrics, _Aggregated
from hud_otel._state import STATE


def _reader(temporality: AggregationTemporality) -> InMemoryMetricReader:
    return InMemoryMetricReader(preferred_temporality={Histogram: temporality, Counter: temporality})


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], Any]:
    out: dict[tuple[Any, ...], Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out[tuple(sorted(p.attributes.items()))] = p
    return out


def _register(*readers: InMemoryMetricReader, views: Any = ()) -> MeterProvider:
    mp = MeterProvider(metric_readers=list(readers), views=list(views))
    hud_sdk.register(tracer_provider=TracerProvider(), meter_provider=mp)
    return mp


def _ok_key(name: str) -> tuple[Any, ...]:
    attrs = {
        "hud.flow.name": name,
        "hud.flow_type": "custom",
        "hud.framework": "custom",
        "hud.flow.outcome": "success",
    }
    return tuple(sorted(attrs.items()))


def test_self_test_proves_the_merge_on_this_sdk():
    """The installed SDK passes the scratch comparison, so the fast path is the one under test here."""
    _SELF_TEST.reset()
    assert _SELF_TEST.ok()
    assert isinstance(FlowMetrics(MeterProvider().get_meter("x")).wrap(_hist(), True), _Aggregated)


def _hist() -> Any:
    return MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("y").create_histogram("h")


@pytest.mark.parametrize("temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA])
def test_duration_points_are_exact_for_both_temporalities(temporality):
    """Count, bucket counts, min and max match the flows; cumulative grows, delta restarts each collection."""
    reader = _reader(temporality)
    mp = _register(reader)
    try:
        assert isinstance(STATE.runtime.instruments.duration, _Aggregated)

        @hud_sdk.sync_flow("job")
        def job():
            pass

        for _ in range(3):
            job()
        first = _points(reader, "hud.flow.duration")[_ok_key("job")]
        assert first.count == 3 and sum(first.bucket_counts) == 3
        assert 0 <= first.min <= first.max and first.sum >= first.max
        for _ in range(2):
            job()
        second = _points(reader, "hud.flow.duration")[_ok_key("job")]
        expected = 5 if temporality is AggregationTemporality.CUMULATIVE else 2
        assert second.count == expected and sum(second.bucket_counts) == expected
        assert second.explicit_bounds == first.explicit_bounds
        # Nothing new: cumulative repeats its point, delta reports nothing for this collection.
        third = _points(reader, "hud.flow.duration")
        if temporality is AggregationTemporality.CUMULATIVE:
            assert third[_ok_key("job")].count == 5
        else:
            assert _ok_key("job") not in third
    finally:
        hud_sdk.shutdown()
        mp.shutdown()


def test_two_readers_each_see_every_flow_and_skip():
    """Cells are handed to every reader's storage, whichever reader collects first."""
    cumulative, delta = _reader(AggregationTemporality.CUMULATIVE), _reader(AggregationTemporality.DELTA)
    mp = _register(cumulative, delta)
    try:
        outer = hud_sdk.sync_flow("outer")
        for _ in range(4):
            with outer, hud_sdk.sync_flow("inner"):
                pass
        assert _points(cumulative, "hud.flow.duration")[_ok_key("outer")].count == 4
        assert _points(delta, "hud.flow.duration")[_ok_key("outer")].count == 4
        with outer:
            pass
        assert _points(delta, "hud.flow.duration")[_ok_key("outer")].count == 1
        assert _points(cumulative, "hud.flow.duration")[_ok_key("outer")].count == 5
        skipped = _points(cumulative, "hud.flow.skipped")[(("reason", "nested"),)]
        assert skipped.value == 4
    finally:
        hud_sdk.shutdown()
        mp.shutdown()


def test_queue_metrics_sum_messages_and_e2e_durations():
    """hud.flow.messages adds message counts; hud.flow.e2e_duration counts queue flows with enqueued_at."""
    import datetime as dt

    reader = _reader(AggregationTemporality.CUMULATIVE)
    mp = _register(reader)
    try:
        enqueued = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=2)
        for count in (1, 3, 5):
            with hud_sdk.sync_flow(
                "orders", flow_type="queue", framework="sqs", enqueued_at=enqueued, message_count=count
            ):
                pass
        base = (("hud.flow.name", "orders"), ("hud.flow_type", "queue"), ("hud.framework", "sqs"))
        assert _points(reader, "hud.flow.messages")[base].value == 9
        e2e = _points(reader, "hud.flow.e2e_duration")[base]
        assert e2e.count == 3 and e2e.min >= 2.0
    finally:
        hud_sdk.shutdown()
        mp.shutdown()


def test_a_view_that_changes_the_aggregation_gets_the_stock_instrument():
    """An exponential-histogram view cannot take merged cells: the stock instrument records instead."""
    reader = _reader(AggregationTemporality.CUMULATIVE)
    view = View(instrument_name="hud.flow.duration", aggregation=ExponentialBucketHistogramAggregation())
    mp = _register(reader, views=[view])
    try:
        assert not isinstance(STATE.runtime.instruments.duration, _Aggregated)
        with hud_sdk.sync_flow("job"):
            pass
        point = _points(reader, "hud.flow.duration")[_ok_key("job")]
        assert point.count == 1 and hasattr(point, "scale")
    finally:
        hud_sdk.shutdown()
        mp.shutdown()


def test_no_flow_is_lost_while_threads_record_and_a_reader_collects():
    """Records from many threads during collections all arrive: the swap and the merge lose nothing."""
    reader = _reader(AggregationTemporality.DELTA)
    mp = _register(reader)
    try:
        flow = hud_sdk.sync_flow("busy")
        seen = 0

        def work():
            for _ in range(300):
                with flow:
                    pass

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            point = _points(reader, "hud.flow.duration").get(_ok_key("busy"))
            seen += point.count if point is not None else 0
        for t in threads:
            t.join()
        point = _points(reader, "hud.flow.duration").get(_ok_key("busy"))
        seen += point.count if point is not None else 0
        assert seen == 1200
    finally:
        hud_sdk.shutdown()
        mp.shutdown()


def test_fresh_attribute_dicts_share_one_cell_and_stay_bounded():
    """Dicts made per call (raw-API flows) are found by content: one cell, bounded pinning, exact count."""
    reader = _reader(AggregationTemporality.CUMULATIVE)
    mp = MeterProvider(metric_readers=[reader])
    meter = mp.get_meter("hud_otel.test")
    hist = FlowMetrics(meter).wrap(meter.create_histogram("d", unit="s"), True)
    assert isinstance(hist, _Aggregated)
    for i in range(6000):
        hist.record(0.001 * (i % 7), {"hud.flow.name": "raw", "hud.flow.outcome": "success"})
    assert len(hist._cells) == 1 and len(hist._pinned) <= 4096
    point = _points(reader, "d")[(("hud.flow.name", "raw"), ("hud.flow.outcome", "success"))]
    assert point.count == 6000 and point.min == 0.0 and point.max == pytest.approx(0.006)
    mp.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_a_cell_lock_is_held_does_not_block_the_child():
    """A child forked while another thread records still records: its cell locks are new ones."""
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    meter = mp.get_meter("hud_otel.test")
    hist = FlowMetrics(meter).wrap(meter.create_histogram("d", unit="s"), True)
    hist._lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            signal.alarm(5)  # a blocked record ends the child with SIGALRM instead of hanging the test
            hist.record(0.1, {"a": "b"})
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        hist._lock.release()
        mp.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0
