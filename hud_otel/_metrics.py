"""Flow metrics aggregated on the hot path and handed to the SDK when a reader collects.

A stock SDK histogram pays, per record, for a ``Measurement`` object, attribute cleaning and hashing,
exemplar sampling and a lock: several microseconds once a reader is attached, a third of a bare span.
Flows record a handful of fixed attribute sets (cached per flow definition), so hud_otel keeps one
small cell per attribute set instead (count, sum, min, max, bucket counts) and, each time any reader
of the meter provider collects, adds the cells into the SDK's own aggregations for every reader. The
SDK then does what it always does with them: temporality (cumulative or delta), views' names, export.
``hud.flow.duration`` and the others stay ordinary SDK instruments, visible to every reader.

Merging into the SDK's aggregations uses SDK internals. :func:`fast_instrument` therefore proves the
merge on a scratch meter provider (cumulative and delta readers, compared with the stock path) before
using it, checks the actual provider's views and readers, and otherwise returns the stock instrument:
on an SDK whose internals differ, hud_otel is as correct as before, only slower.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from typing import Any, Callable, Optional, Union

from opentelemetry.context import Context
from opentelemetry.metrics import Meter, Observation

from ._guard import internal_guard, logger

# Past this many distinct attribute sets per instrument, records go to the stock instrument.
_MAX_CELLS = 4096
_EMPTY_CONTEXT = Context()


class _Cell:
    """What one attribute set recorded since the last collection."""

    __slots__ = ("attrs", "buckets", "count", "key", "max", "min", "sum")

    def __init__(self, attrs: dict[str, Any], key: Any, nbuckets: int) -> None:
        self.attrs = attrs
        self.key = key
        self.count = 0
        self.sum: float = 0
        self.min = math.inf
        self.max = -math.inf
        self.buckets = [0] * nbuckets


class _Aggregated:
    """The cells of one instrument, and how they are merged into the SDK's storages."""

    def __init__(self, sdk: Any, is_histogram: bool, boundaries: tuple[float, ...]) -> None:
        self._sdk = sdk  # the stock SDK instrument the cells are merged into
        self._is_histogram = is_histogram
        self._boundaries = boundaries
        self._cells: dict[Any, _Cell] = {}  # by the SDK's key of the attribute set
        self._by_id: dict[int, _Cell] = {}
        self._pinned: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.active = True
        _LIVE.add(self)

    # -- hot path ------------------------------------------------------------------------------

    def _cell(self, attrs: dict[str, Any]) -> Optional[_Cell]:
        # Flows pass the same cached dict for each attribute set: found by identity, no hashing. Any
        # other dict is looked up by content; the first _MAX_CELLS dicts are pinned (kept alive, so
        # their id() cannot be reused by another dict) to be found by identity next time.
        cell = self._by_id.get(id(attrs))
        if cell is not None:
            return cell
        try:
            key = _attributes_key(attrs)
            cell = self._cells.get(key)
        except Exception:
            return None
        if cell is None:
            if len(self._cells) >= _MAX_CELLS:
                return None
            cell = self._cells[key] = _Cell(dict(attrs), key, len(self._boundaries) + 1)
        if len(self._by_id) < _MAX_CELLS:
            self._by_id[id(attrs)] = cell
            self._pinned.append(attrs)
        return cell

    def record(self, amount: Union[int, float], attributes: Optional[dict[str, Any]] = None) -> None:
        if not self.active or attributes is None:
            self._sdk.record(amount, attributes)
            return
        with self._lock:
            cell = self._cell(attributes)
            if cell is not None:
                cell.count += 1
                cell.sum += amount
                if amount < cell.min:
                    cell.min = amount
                if amount > cell.max:
                    cell.max = amount
                cell.buckets[bisect_left(self._boundaries, amount)] += 1
                return
        self._sdk.record(amount, attributes)

    def add(self, amount: Union[int, float], attributes: Optional[dict[str, Any]] = None) -> None:
        if not self.active or attributes is None:
            self._sdk.add(amount, attributes)
            return
        with self._lock:
            cell = self._cell(attributes)
            if cell is not None:
                cell.count += 1
                cell.sum += amount
                return
        self._sdk.add(amount, attributes)

    # -- collection ------------------------------------------------------------------------------

    def take(self) -> list[_Cell]:
        """The cells with something in them, swapped for empty ones."""
        out = []
        with self._lock:
            for cell in self._cells.values():
                if cell.count:
                    taken = _Cell(cell.attrs, cell.key, 0)
                    taken.count, taken.sum, taken.min, taken.max = cell.count, cell.sum, cell.min, cell.max
                    taken.buckets = cell.buckets
                    cell.count, cell.sum, cell.min, cell.max = 0, 0, math.inf, -math.inf
                    cell.buckets = [0] * (len(self._boundaries) + 1)
                    out.append(taken)
        return out


# A fork while another thread holds a cell lock must not leave the child's flows waiting forever.
_LIVE: weakref.WeakSet[_Aggregated] = weakref.WeakSet()


_LIVE_HOOKS: weakref.WeakSet[FlowMetrics] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    for agg in list(_LIVE):
        agg._lock = threading.Lock()
    # What the parent recorded is the parent's to export: a child that kept it would report those flows a
    # second time (cumulative totals counting the parent's flows, or its pending cells re-sent).
    for hook in list(_LIVE_HOOKS):
        try:
            hook.forget_parent()
        except Exception:  # the child's flows matter more than a clean slate
            logger.debug("hud_otel: could not reset flow metrics in a forked child", exc_info=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


def _attributes_key(attrs: dict[str, Any]) -> Any:
    return _HASH(dict(attrs))


def _items_key(attrs: dict[str, Any]) -> Any:
    return frozenset(attrs.items())


# How the SDK keys an attribute set: a hashed form since 1.39, a frozenset of the items before.
_HASH: Callable[[dict[str, Any]], Any]
try:
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

    _HASH = _hash_attributes
except ImportError:  # pragma: no cover - older SDKs
    _HASH = _items_key


class FlowMetrics:
    """The hook that hands every aggregated instrument of one meter to the SDK at collection."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._consumer = getattr(meter, "_measurement_consumer", None)
        self._instruments: list[_Aggregated] = []
        self._collect_lock = threading.Lock()
        self._hooked = False
        _LIVE_HOOKS.add(self)

    def wrap(self, sdk: Any, is_histogram: bool, proven: Optional[bool] = None) -> Any:
        """The aggregated twin of ``sdk``, or ``sdk`` itself where merging is not proven to work."""
        if proven is None:
            proven = _SELF_TEST.ok()
        if self._consumer is None or not proven:
            return sdk
        boundaries = _compatible(self._consumer, sdk, is_histogram)
        if boundaries is None:
            return sdk
        agg = _Aggregated(sdk, is_histogram, boundaries)
        self._instruments.append(agg)
        if not self._hooked:
            self._hooked = True
            # An observable instrument whose callback reports nothing: the SDK calls it at the start of
            # every collection of every reader, which is the moment to hand the cells over.
            self._meter.create_observable_gauge(
                "hud_otel.internal.collect", callbacks=[self._on_collect], unit="1"
            )
        return agg

    def forget_parent(self) -> None:
        """In a forked child: drop the cells and the SDK aggregations the parent process recorded."""
        self._collect_lock = threading.Lock()  # a collecting thread of the parent may have held it
        consumer = self._consumer
        for agg in self._instruments:
            agg.take()
            if consumer is None or not agg.active:
                continue
            for storage in list(consumer._reader_storages.values()):
                for vim in storage._get_or_init_view_instrument_match(agg._sdk):
                    vim._lock = threading.Lock()
                    vim._attributes_aggregation.clear()

    def _on_collect(self, _options: Any) -> list[Observation]:
        with internal_guard:
            self.drain()
        return []

    def drain(self) -> None:
        """Merge every cell recorded so far into the SDK's storages of every reader."""
        consumer = self._consumer
        with self._collect_lock:
            for agg in self._instruments:
                cells = agg.take()
                if not cells:
                    continue
                enabled = getattr(agg._sdk, "_is_enabled", None)
                if enabled is not None and not enabled():
                    continue  # the meter was disabled (SDK meter configurator): stock records drop too
                storages = list(consumer._reader_storages.values())  # type: ignore[union-attr]
                if _compatible(consumer, agg._sdk, agg._is_histogram) != agg._boundaries:
                    # A reader or view that cannot take merged cells (added after register()):
                    # from now on the stock instrument, and what is pending is replayed into it.
                    agg.active = False
                    logger.info("hud_otel: a metric reader needs the stock SDK path for %s", agg._sdk.name)
                    _replay(agg, cells)
                    continue
                for storage in storages:
                    for vim in storage._get_or_init_view_instrument_match(agg._sdk):
                        for cell in cells:
                            _merge_into(vim, agg, cell)


def _compatible(consumer: Any, sdk: Any, is_histogram: bool) -> Optional[tuple[float, ...]]:
    """The boundaries every reader aggregates ``sdk`` with, if all take merged cells; else None."""
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
        _SumAggregation,
    )

    boundaries: Optional[tuple[float, ...]] = None
    for storage in list(consumer._reader_storages.values()):
        for vim in storage._get_or_init_view_instrument_match(sdk):
            if vim._view._attribute_keys is not None:
                return None
            template = vim._aggregation
            if is_histogram:
                if type(template) is not _ExplicitBucketHistogramAggregation:
                    return None
                bounds = tuple(template._boundaries)
                if boundaries is not None and bounds != boundaries:
                    return None
                boundaries = bounds
            elif type(template) is not _SumAggregation:
                return None
    if boundaries is None:
        # No reader yet: the SDK's default buckets, which a reader added later most likely uses.
        from opentelemetry.sdk.metrics._internal.aggregation import (
            _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES as DEFAULT,
        )

        return tuple(DEFAULT) if is_histogram else ()
    return boundaries


def _merge_into(vim: Any, agg: _Aggregated, cell: _Cell) -> None:
    from opentelemetry.sdk.metrics._internal.measurement import Measurement

    count, total = cell.count, cell.sum
    buckets = cell.buckets
    target = vim._attributes_aggregation.get(cell.key)
    if target is None:
        # Let the SDK create the aggregation its own way, by consuming one real measurement.
        first = cell.min if agg._is_histogram else total
        vim.consume_measurement(
            Measurement(first, time.time_ns(), agg._sdk, _EMPTY_CONTEXT, cell.attrs), False
        )
        if not agg._is_histogram:
            return
        count -= 1
        total -= first
        buckets = list(buckets)
        buckets[bisect_left(agg._boundaries, first)] -= 1
        if count == 0:
            return
        target = vim._attributes_aggregation[cell.key]
    with target._lock:
        if agg._is_histogram:
            value = target._value
            if value is None:
                value = target._value = [0] * len(buckets)
            for i, n in enumerate(buckets):
                if n:
                    value[i] += n
            target._sum += total
            if target._record_min_max:
                target._min = min(target._min, cell.min)
                target._max = max(target._max, cell.max)
        else:
            target._value = total if target._value is None else target._value + total


def _replay(agg: _Aggregated, cells: list[_Cell]) -> None:
    """Hand pending cells to the stock instrument (counts and sums exact, values at the mean)."""
    for cell in cells:
        if agg._is_histogram:
            mean = cell.sum / cell.count
            for _ in range(cell.count):
                agg._sdk.record(mean, cell.attrs)
        else:
            agg._sdk.add(cell.sum, cell.attrs)


class _SelfTest:
    """Proves, once per process, that merged cells collect exactly as stock records would."""

    def __init__(self) -> None:
        self._result: Optional[bool] = None
        self._lock = threading.Lock()

    def ok(self) -> bool:
        if self._result is None:
            with self._lock:
                if self._result is None:
                    try:
                        self._result = _self_test()
                    except Exception:
                        self._result = False
                    if not self._result:
                        logger.info("hud_otel: flow metrics use the stock SDK instruments")
        return self._result

    def reset(self) -> None:
        self._result = None


def _self_test() -> bool:
    from opentelemetry.sdk.metrics import Counter as SdkCounter
    from opentelemetry.sdk.metrics import Histogram as SdkHistogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

    values = [0.0004, 0.003, 0.003, 0.2, 7.5, 12000.0]
    results = []
    for temporality in (AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA):
        seen = []
        for fast in (False, True):
            reader = InMemoryMetricReader(
                preferred_temporality={SdkHistogram: temporality, SdkCounter: temporality}
            )
            provider = MeterProvider(metric_readers=[reader])
            meter = provider.get_meter("hud_otel.selftest")
            hist: Any = meter.create_histogram("h", unit="s")
            counter: Any = meter.create_counter("c")
            if fast:
                hook = FlowMetrics(meter)
                if hook._consumer is None:
                    return False
                hist, counter = hook.wrap(hist, True, True), hook.wrap(counter, False, True)
                if not isinstance(hist, _Aggregated) or not isinstance(counter, _Aggregated):
                    return False
            attrs = {"a": "x", "b": "y"}
            rounds = []
            for chunk in (values[:3], values[3:], []):
                for v in chunk:
                    hist.record(v, attrs)
                    counter.add(2, attrs)
                rounds.append(_points(reader))
            provider.shutdown()
            seen.append(rounds)
        results.append(seen[0] == seen[1] and bool(seen[0][0]))
    return all(results)


def _points(reader: Any) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    out: list[tuple[Any, ...]] = []
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    out.append(
                        (
                            metric.name,
                            tuple(sorted(p.attributes.items())),
                            getattr(p, "count", None),
                            round(getattr(p, "sum", 0) or 0, 9),
                            getattr(p, "value", None),
                            getattr(p, "min", None),
                            getattr(p, "max", None),
                            tuple(getattr(p, "bucket_counts", ()) or ()),
                            p.start_time_unix_nano is not None,
                        )
                    )
    return sorted(out, key=repr)


_SELF_TEST = _SelfTest()
