"""Security and memory bounds: hostile input sizes stay within the caps of CONTRACT section 3.

``set_context`` with megabyte strings and 10,000 keys keeps a flow's memory bounded by the caps (64
keys, 1,024 characters a string); a stream of a million distinct flow names keeps memory bounded by
the name cap (default 1,000). Memory is measured with ``tracemalloc`` (allocations made by Python) for
a flow, and with the process's resident set size for the million-name stream, which would be too slow
to trace.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import psutil
import pytest

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel._guard import _warned
from hud_otel._state import STATE

MB = 1024 * 1024
# A generous allowance for one capped flow: 64 keys x 1,024 characters is 64 KiB of text (up to 4 bytes
# a character), plus the span, its attribute dict and the keys.
FLOW_BUDGET = 512 * 1024


def _traced_growth(fn) -> tuple[int, int]:
    """(bytes still allocated after ``fn``, peak bytes during it), both above the state before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before


def test_set_context_with_huge_values_keeps_a_flow_bounded(hud_flows):
    """10,000 keys each given a 1 MB string (and 1 MB lists and keys) in one flow: the flow's span
    keeps at most 64 keys of at most 1,024 characters, the memory the open flow holds stays under
    512 KiB (the input is about 10 MB of references to megabyte strings), and the flow exports."""
    big = "x" * MB
    wide = "\u00e9" * MB  # 2 bytes a character in UTF-8
    values = {f"key{i}": big for i in range(10_000)}
    huge_keys = {("k" * MB) + str(i): wide for i in range(8)}
    big_list = [big] * 1_000

    holder: list[object] = []

    def open_flow_and_set() -> None:
        flow = hud.sync_flow("huge-context")
        flow.__enter__()
        hud.set_context(**values)
        hud.set_context(**huge_keys)
        hud.set_context(key0=big_list, key1=wide)
        holder.append(flow)  # keep the flow open while memory is measured

    retained, peak = _traced_growth(open_flow_and_set)
    holder[0].__exit__(None, None, None)
    flow = hud_flows.flow("huge-context")
    assert len(flow.context) == A.MAX_CONTEXT_KEYS
    for key, value in flow.context.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        assert len(key) <= 128 and all(len(v) <= A.MAX_CONTEXT_VALUE_LENGTH for v in items)
    assert len(flow.context["key0"]) <= A.MAX_CONTEXT_KEYS  # a list is cut to 64 items
    assert retained < FLOW_BUDGET, retained
    assert peak < 2 * MB, peak  # no copy of a megabyte input, no work for keys over the cap
    print(
        f"\n[figures] set_context 10,000 keys x 1 MB: open flow retains {retained / 1024:.0f} KiB, peak {peak / 1024:.0f} KiB"
    )


def test_memory_per_flow_does_not_grow_with_input_size(hud_flows):
    """The memory an open flow holds is the same whether ``set_context`` gets 2 KB or 1 MB strings,
    and 100 or 10,000 keys: the caps, not the input, bound it."""

    def measure(size: int, keys: int) -> int:
        text = "y" * size
        values = {f"key{i}": text for i in range(keys)}
        holder: list[object] = []

        def run() -> None:
            flow = hud.sync_flow("sized")
            flow.__enter__()
            hud.set_context(**values)
            holder.append(flow)

        retained, _ = _traced_growth(run)
        holder[0].__exit__(None, None, None)
        return retained

    small = measure(2048, 100)  # over the cap, so that each value is cut (copied) too
    large = measure(MB, 10_000)
    # Same caps, same memory (within allocator noise).
    assert large < small * 1.5 + 16 * 1024, (small, large)
    assert len(hud_flows.flows("sized")) == 2


@pytest.mark.slow
def test_a_million_distinct_flow_names_stay_bounded_by_the_name_cap():
    """A hostile stream of 1,000,000 distinct flow names (context managers and start_flow): only the
    first 1,000 become flows, the rest are skipped and counted ``name_cap``, one warning is given, and
    the process's memory grows by less than 32 MB from the first 100,000 names to the millionth (an
    uncapped registry would hold a million names and definitions)."""
    from hud_otel.testing import capture_flows

    process = psutil.Process()
    with capture_flows() as capture:
        rt = STATE.runtime
        assert rt is not None

        def stream(start: int, stop: int) -> None:
            for i in range(start, stop):
                if i % 2:
                    with hud.sync_flow(f"user-{i}"):
                        pass
                else:
                    hud.start_flow(f"user-{i}", flow_type=hud.FlowType.QUEUE)
                    hud.end_flow()

        began = time.perf_counter()
        stream(0, 100_000)
        capture.clear()
        gc.collect()
        rss_warm = process.memory_info().rss
        warned_warm = len(_warned)
        stream(100_000, 1_000_000)
        capture.clear()
        gc.collect()
        rss_end = process.memory_info().rss
        elapsed = time.perf_counter() - began

        assert len(rt.keys) == A.DEFAULT_MAX_FLOW_NAMES
        assert len(rt.definitions) <= 2 * A.DEFAULT_MAX_FLOW_NAMES
        assert len(_warned) == warned_warm  # no warning per name
        assert capture.skipped() == {A.REASON_NAME_CAP: 1_000_000 - A.DEFAULT_MAX_FLOW_NAMES}
        growth = rss_end - rss_warm
        assert growth < 32 * MB, growth
        # Names already admitted keep working after the flood.
        with hud.sync_flow("user-1"):
            pass
        assert [f.name for f in capture.flows()] == ["user-1"]
    print(
        f"\n[figures] 1,000,000 distinct names in {elapsed:.1f}s: {A.DEFAULT_MAX_FLOW_NAMES} admitted, "
        f"RSS growth after the first 100,000: {growth / MB:.1f} MB"
    )


def test_warning_registry_is_bounded():
    """A stream of 20,000 distinct bad inputs (invalid flow names) leaves hud_otel's warned-once
    registry at its bound, not one entry per input."""
    from hud_otel import _guard
    from hud_otel.testing import capture_flows

    with capture_flows():
        for i in range(20_000):
            with hud.sync_flow(f"{' ' * 300}{i}"):  # over 256 characters: invalid, distinct
                pass
        assert len(_warned) <= _guard._MAX_WARNING_KEYS + 1
