"""Scenarios 1, 2, 4, 5 and 6: the cost of one flow, side by side with a bare OpenTelemetry span.

Run one scenario: ``python -m bench.flows active|kinds|unregistered|nested|processor``. Each runs in its
own process (the runner starts them), so no scenario warms or registers anything for another.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Generator
from typing import Any, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import hud_otel
from hud_otel import _attributes as A

from ._harness import Loop, bare_tracer_provider, compare, emit, metered_provider, row

# Many short rounds: on a shared 2-core machine a burst of other work spoils a few rounds, not the median.
ROUNDS = 31
N = 1500


def _register() -> tuple[TracerProvider, Any]:
    """hud_otel on its own provider with a real metric reader: the flow pays for its metrics."""
    tp = bare_tracer_provider()
    mp = metered_provider()
    hud_otel.register(tracer_provider=tp, meter_provider=mp)
    return tp, mp


def _span_attributes(fn: Callable[..., Any], name: str = "job") -> dict[str, Any]:
    """What the flow span carries at its end, so the baseline span carries the same attributes."""
    return {
        A.FLOW_NAME: name,
        A.FLOW_TYPE: "custom",
        A.FRAMEWORK: "custom",
        A.CODE_FUNCTION_NAME: f"{fn.__module__}.{fn.__qualname__}",
        A.CODE_FILE_PATH: fn.__code__.co_filename,
        A.FLOW_OUTCOME: A.OUTCOME_SUCCESS,
    }


def _body() -> None:
    pass


def _loop(fn: Callable[[], Any]) -> Loop:
    def loop(n: int) -> None:
        for _ in range(n):
            fn()

    return loop


def scenario_active() -> list[dict[str, Any]]:
    """1. An active sync flow by decorator vs ``start_as_current_span`` with the same attributes."""
    _register()
    bare = bare_tracer_provider().get_tracer("bench")

    @hud_otel.sync_flow("job")
    def job() -> None:
        pass

    attrs = _span_attributes(job.__wrapped__)  # type: ignore[attr-defined]

    def base() -> None:
        with bare.start_as_current_span("job", attributes=attrs):
            pass

    def floor() -> None:
        bare.start_span("job").end()

    def limit() -> None:
        # The least any flow can cost through the SDK: its span with the same attributes, made current
        # and restored, with no context manager, no flow bookkeeping and no metrics.
        span = bare.start_span("job", attributes=attrs)
        token = otel_context.attach(trace.set_span_in_context(span))
        otel_context.detach(token)
        span.end()

    res = compare(
        {"flow": _loop(job), "span": _loop(base), "floor": _loop(floor), "limit": _loop(limit)},
        n=N,
        rounds=ROUNDS,
    )
    return [
        row(
            "1",
            "sync flow, decorator",
            res["flow"],
            res["span"],
            "<= 1.25 (aim 0.75)",
            res["flow"] / res["span"] <= 1.25,
            baseline="start_as_current_span",
            aim_ok=res["flow"] / res["span"] <= 0.75,
        ),
        row(
            "1",
            "(info) limit: start_span(attrs)+attach+end",
            res["limit"],
            res["span"],
            "",
            None,
            baseline="start_as_current_span",
        ),
        row(
            "1",
            "(info) SDK floor start_span().end()",
            res["floor"],
            res["span"],
            "",
            None,
            baseline="start_as_current_span",
        ),
    ]


def scenario_kinds() -> list[dict[str, Any]]:
    """2. The context manager, start_flow/end_flow, an async flow and a generator flow."""
    _register()
    bare = bare_tracer_provider().get_tracer("bench")
    cm_attrs = {
        A.FLOW_NAME: "job",
        A.FLOW_TYPE: "custom",
        A.FRAMEWORK: "custom",
        A.FLOW_OUTCOME: A.OUTCOME_SUCCESS,
    }
    flow = hud_otel.sync_flow("job")

    def with_flow() -> None:
        with flow:
            pass

    def with_span() -> None:
        with bare.start_as_current_span("job", attributes=cm_attrs):
            pass

    def start_end() -> None:
        hud_otel.start_flow("job")
        hud_otel.end_flow()

    @hud_otel.async_flow("job")
    async def ajob() -> None:
        pass

    a_attrs = _span_attributes(ajob.__wrapped__)  # type: ignore[attr-defined]

    async def aspan() -> None:
        with bare.start_as_current_span("job", attributes=a_attrs):
            pass

    loop = asyncio.new_event_loop()

    def async_loop(fn: Callable[[], Any]) -> Loop:
        async def many(n: int) -> None:
            for _ in range(n):
                await fn()

        return lambda n: loop.run_until_complete(many(n))

    @hud_otel.sync_flow("job")
    def gjob() -> Generator[int, None, None]:
        yield 1

    g_attrs = _span_attributes(gjob.__wrapped__)  # type: ignore[attr-defined]

    def gspan() -> Generator[int, None, None]:
        with bare.start_as_current_span("job", attributes=g_attrs):
            yield 1

    def gen_loop(fn: Callable[[], Any]) -> Loop:
        def run(n: int) -> None:
            for _ in range(n):
                for _item in fn():
                    pass

        return run

    rows = []
    cases = [
        ("context manager", _loop(with_flow), _loop(with_span)),
        ("start_flow/end_flow", _loop(start_end), _loop(with_span)),
        ("async flow, decorator", async_loop(ajob), async_loop(aspan)),
        ("generator flow, decorator", gen_loop(gjob), gen_loop(gspan)),
    ]
    for case, ours, base in cases:
        res = compare({"flow": ours, "span": base}, n=N, rounds=ROUNDS)
        ratio = res["flow"] / res["span"]
        rows.append(
            row(
                "2",
                case,
                res["flow"],
                res["span"],
                "<= 1.25 (aim 0.75)",
                ratio <= 1.25,
                baseline="start_as_current_span",
                aim_ok=ratio <= 0.75,
            )
        )
    loop.close()
    return rows


def scenario_unregistered() -> list[dict[str, Any]]:
    """4. A call before ``register()`` vs the thinnest honest decorator, and vs no decorator."""
    assert hud_otel._state.STATE.runtime is None

    def plain(x: int, y: int = 0) -> int:
        return x + y

    def thin(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    ours = hud_otel.sync_flow("job")(plain)
    thinned = thin(plain)
    ours(1)  # the one warning a process gets

    def loop_of(fn: Callable[..., Any]) -> Loop:
        def run(n: int) -> None:
            for i in range(n):
                fn(i, y=1)

        return run

    res = compare(
        {"ours": loop_of(ours), "thin": loop_of(thinned), "plain": loop_of(plain)},
        n=N * 25,
        rounds=ROUNDS,
    )
    ratio = res["ours"] / res["thin"]
    return [
        row(
            "4",
            "before register()",
            res["ours"],
            res["thin"],
            "<= 1.3",
            ratio <= 1.3,
            baseline="functools.wraps pass-through",
        ),
        row("4", "(info) vs undecorated", res["ours"], res["plain"], "", None, baseline="plain call"),
    ]


def scenario_nested() -> list[dict[str, Any]]:
    """5. A nested flow (skipped, counted) vs an active flow."""
    _register()

    @hud_otel.sync_flow("inner")
    def inner() -> None:
        pass

    @hud_otel.sync_flow("job")
    def job() -> None:
        pass

    outer = hud_otel.sync_flow("outer")

    def nested_loop(n: int) -> None:
        with outer:
            for _ in range(n):
                inner()

    res = compare({"nested": nested_loop, "active": _loop(job)}, n=N, rounds=ROUNDS)
    ratio = res["nested"] / res["active"]
    return [
        row(
            "5",
            "nested flow (skipped)",
            res["nested"],
            res["active"],
            "<= 0.1",
            ratio <= 0.1,
            baseline="active flow",
        )
    ]


def scenario_processor() -> list[dict[str, Any]]:
    """6. The span processor's cost on an ordinary span, outside and inside a flow."""
    tp, _mp = _register()
    with_hud = tp.get_tracer("bench")
    without = bare_tracer_provider().get_tracer("bench")

    def span_on(tracer: Any) -> Loop:
        def run(n: int) -> None:
            for _ in range(n):
                with tracer.start_as_current_span("query"):
                    pass

        return run

    # What the SDK does for each span's processors, with and without hud_otel's: on_start, _on_ending
    # (SDK >= 1.39) and on_end through the provider's multi-processor, on one real ordinary span. This
    # isolates the added cost, which is far below the noise of timing two whole spans.
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    from hud_otel._processor import HudSpanProcessor

    ours_multi = SynchronousMultiSpanProcessor()
    ours_multi.add_span_processor(HudSpanProcessor())
    none_multi = SynchronousMultiSpanProcessor()
    span = without.start_span("query")
    span.end()

    def hooks(multi: Any) -> Loop:
        on_start, on_end = multi.on_start, multi.on_end
        on_ending = getattr(multi, "_on_ending", lambda span: None)

        def run(n: int) -> None:
            for _ in range(n):
                on_start(span, None)
                on_ending(span)
                on_end(span)

        return run

    res = compare({"hud": hooks(ours_multi), "none": hooks(none_multi)}, n=N * 20, rounds=ROUNDS)
    added = res["hud"] - res["none"]
    rows = [
        row(
            "6",
            "ordinary span: processor hooks added",
            res["hud"],
            res["none"],
            "<= +1000 ns",
            added <= 1000,
            baseline="the same hooks without it",
            added_ns=added,
            note=f"added {added:+.0f} ns",
        )
    ]
    res = compare({"hud": span_on(with_hud), "bare": span_on(without)}, n=N, rounds=ROUNDS)
    added = res["hud"] - res["bare"]
    rows.append(
        row(
            "6",
            "(info) whole span with vs without it",
            res["hud"],
            res["bare"],
            "",
            None,
            baseline="same span without it",
            added_ns=added,
            note=f"added {added:+.0f} ns (within run-to-run noise)",
        )
    )
    flow = hud_otel.sync_flow("job")

    def inside(tracer: Any) -> Loop:
        def run(n: int) -> None:
            with flow:
                for _ in range(n):
                    with tracer.start_as_current_span("query"):
                        pass

        return run

    # The same provider on both sides: inside a flow the processor stamps hud.flow.name.
    res = compare({"inside": inside(with_hud), "outside": span_on(with_hud)}, n=N, rounds=ROUNDS)
    added = res["inside"] - res["outside"]
    rows.append(
        row(
            "6",
            "(info) span inside a flow (stamped)",
            res["inside"],
            res["outside"],
            "",
            None,
            baseline="same span outside a flow",
            added_ns=added,
            note=f"added {added:+.0f} ns",
        )
    )
    return rows


def scenario_metrics() -> list[dict[str, Any]]:
    """1 (options). One duration record: the stock SDK histogram vs hud_otel's aggregated cell.

    Both on a meter provider with a real periodic reader attached, the same attribute dict each time
    (flows pass one cached dict per attribute set).
    """
    from hud_otel._metrics import FlowMetrics

    attrs = {A.FLOW_NAME: "job", A.FLOW_TYPE: "custom", A.FRAMEWORK: "custom", A.FLOW_OUTCOME: "success"}
    stock_meter = metered_provider().get_meter("bench")
    stock = stock_meter.create_histogram("d", unit="s")
    fast_meter = metered_provider().get_meter("bench")
    fast = FlowMetrics(fast_meter).wrap(fast_meter.create_histogram("d", unit="s"), True)

    def rec(instrument: Any) -> Loop:
        def run(n: int) -> None:
            for i in range(n):
                instrument.record(0.001 * (i & 7), attrs)

        return run

    res = compare({"fast": rec(fast), "stock": rec(stock)}, n=N * 4, rounds=ROUNDS)
    return [
        row(
            "1",
            "(option) duration record, aggregated cell",
            res["fast"],
            res["stock"],
            "",
            None,
            baseline="SDK histogram.record",
            note="kept" if type(fast).__name__ == "_Aggregated" else "stock path in use",
        )
    ]


SCENARIOS = {
    "metrics": scenario_metrics,
    "active": scenario_active,
    "kinds": scenario_kinds,
    "unregistered": scenario_unregistered,
    "nested": scenario_nested,
    "processor": scenario_processor,
}


def main(argv: list[str]) -> None:
    emit(SCENARIOS[argv[0]]())


if __name__ == "__main__":
    main(sys.argv[1:])
