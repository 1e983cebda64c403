"""Decorators keep the function's kind, signature and metadata, and time the whole call, for all six
kinds: plain functions, generator functions, methods, classmethods, staticmethods, ``async def`` and
async generators."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from typing import Any

import pytest
from opentelemetry import trace

import hud_otel as hud_sdk
from hud_otel.testing import capture_flows
from tests.spans import whole


def plain(a: int, b: str = "x", *args: Any, key: bool = False, **kw: Any) -> str:
    """A plain function."""
    return f"{a}{b}{key}"


def gen(n: int) -> Any:
    """A generator function."""
    for i in range(n):
        time.sleep(0.02)
        yield i


async def coro(delay: float) -> str:
    """An async function."""
    await asyncio.sleep(delay)
    return "done"


async def agen(n: int) -> Any:
    """An async generator."""
    for i in range(n):
        await asyncio.sleep(0.02)
        yield i


KIND_CHECKS = (
    inspect.iscoroutinefunction,
    inspect.isgeneratorfunction,
    inspect.isasyncgenfunction,
)


@pytest.mark.parametrize("fn", [plain, gen, coro, agen], ids=lambda f: f.__name__)
@pytest.mark.parametrize("decorator", [hud_sdk.sync_flow, hud_sdk.async_flow], ids=["sync", "async"])
def test_decorator_keeps_kind_signature_and_metadata(fn, decorator):
    """inspect's kind checks, the signature and functools.wraps metadata are those of the original."""
    wrapped = decorator("kinds")(fn)
    assert [check(wrapped) for check in KIND_CHECKS] == [check(fn) for check in KIND_CHECKS]
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__doc__, wrapped.__module__) == (
        fn.__name__,
        fn.__qualname__,
        fn.__doc__,
        fn.__module__,
    )
    assert wrapped.__wrapped__ is fn
    assert wrapped.__annotations__ == fn.__annotations__


class Service:
    def __init__(self) -> None:
        self.calls = 0

    @hud_sdk.sync_flow("method")
    def method(self, x: int) -> int:
        self.calls += 1
        return x * 2

    @classmethod
    @hud_sdk.sync_flow("classmethod-inner")
    def cm_inner(cls, x: int) -> str:
        return f"{cls.__name__}{x}"

    @hud_sdk.sync_flow("classmethod-outer")
    @classmethod
    def cm_outer(cls, x: int) -> str:
        return f"{cls.__name__}{x}"

    @staticmethod
    @hud_sdk.sync_flow("staticmethod-inner")
    def sm_inner(x: int) -> int:
        return x + 1

    @hud_sdk.sync_flow("staticmethod-outer")
    @staticmethod
    def sm_outer(x: int) -> int:
        return x + 1

    @hud_sdk.async_flow("async-method")
    async def amethod(self) -> str:
        return "a"


def test_methods_classmethods_and_staticmethods_bind_as_before_and_each_call_is_a_flow():
    """Binding works whichever order the decorators are stacked in, on the class and on instances."""
    with capture_flows() as flows:
        svc = Service()
        assert svc.method(2) == 4 and svc.calls == 1
        assert Service.cm_inner(1) == "Service1" and svc.cm_inner(2) == "Service2"
        assert Service.cm_outer(3) == "Service3"
        assert Service.sm_inner(1) == 2 and svc.sm_outer(2) == 3
        assert asyncio.run(svc.amethod()) == "a"
        assert inspect.signature(Service.method) == inspect.signature(Service.method.__wrapped__)
        assert inspect.iscoroutinefunction(Service.amethod)
        names = [(f.name, f.span.attributes["code.function.name"]) for f in flows.flows()]
        assert names == [
            ("method", f"{__name__}.Service.method"),
            ("classmethod-inner", f"{__name__}.Service.cm_inner"),
            ("classmethod-inner", f"{__name__}.Service.cm_inner"),
            ("classmethod-outer", f"{__name__}.Service.cm_outer"),
            ("staticmethod-inner", f"{__name__}.Service.sm_inner"),
            ("staticmethod-outer", f"{__name__}.Service.sm_outer"),
            ("async-method", f"{__name__}.Service.amethod"),
        ]
        assert all(f.span.attributes["code.file.path"] == __file__ for f in flows.flows())


def test_a_generator_flow_covers_the_whole_iteration():
    """Three 20 ms steps: the flow lasts at least 60 ms, one span, from first step to exhaustion."""
    with capture_flows() as flows:
        wrapped = hud_sdk.sync_flow("gen")(gen)
        assert list(wrapped(3)) == [0, 1, 2]
        (flow,) = flows.flows()
        assert flow.duration_s >= 0.06
        assert flow.outcome == "success"


def test_an_async_function_awaiting_50ms_gets_a_flow_of_at_least_50ms():
    """The flow of a coroutine covers its awaits."""
    with capture_flows() as flows:
        wrapped = hud_sdk.async_flow("coro")(coro)
        assert asyncio.run(wrapped(0.05)) == "done"
        (flow,) = flows.flows()
        assert flow.duration_s >= 0.05


def test_an_async_generator_flow_covers_the_whole_iteration():
    """The flow of an async generator lasts until it is exhausted."""
    with capture_flows() as flows:
        wrapped = hud_sdk.async_flow("agen")(agen)

        async def consume():
            return [x async for x in wrapped(3)]

        assert asyncio.run(consume()) == [0, 1, 2]
        (flow,) = flows.flows()
        assert flow.duration_s >= 0.06


def test_a_generator_flow_context_is_active_only_while_the_generator_runs_a_step():
    """Spans the consumer makes between steps are not inside the flow; spans made in a step are."""
    with capture_flows() as flows:
        tracer = flows.tracer_provider.get_tracer("app")

        @hud_sdk.sync_flow("producer")
        def producer():
            for i in range(2):
                with tracer.start_as_current_span(f"produce-{i}"):
                    pass
                yield i

        for i in producer():
            with tracer.start_as_current_span(f"consume-{i}"):
                hud_sdk.set_context(consumer_saw=i)  # outside any flow: ignored
        spans = {s.name: s for s in flows.spans()}
        flow_span = spans["producer"]
        for i in range(2):
            assert spans[f"produce-{i}"].parent.span_id == flow_span.context.span_id
            assert spans[f"produce-{i}"].attributes == {"hud.flow.name": "producer"}
            assert spans[f"consume-{i}"].parent is None
            assert dict(spans[f"consume-{i}"].attributes) == {}
        assert "hud.context.consumer_saw" not in flow_span.attributes


def test_generator_send_and_throw_reach_the_wrapped_generator():
    """send() values and throw()n exceptions go through the wrapper to the user's generator."""
    with capture_flows() as flows:

        @hud_sdk.sync_flow("echo")
        def echo():
            received = []
            try:
                while True:
                    value = yield len(received)
                    received.append(value)
            except ValueError:
                yield received

        g = echo()
        assert next(g) == 0
        assert g.send("a") == 1
        assert g.throw(ValueError("stop")) == ["a"]
        g.close()
        assert [f.outcome for f in flows.flows()] == ["success"]


def test_an_exception_inside_a_generator_fails_its_flow_and_reaches_the_consumer():
    """The generator's own exception is the flow's error and propagates unchanged."""
    with capture_flows() as flows:

        @hud_sdk.sync_flow("broken-gen")
        def broken():
            yield 1
            raise LookupError("gone")

        with pytest.raises(LookupError, match="gone"):
            list(broken())
        (flow,) = flows.flows()
        assert (flow.outcome, flow.error) == ("failure", "LookupError")


def test_one_decorated_function_called_by_many_threads_at_once_tracks_each_call():
    """Per-call state is per context: 8 threads x 50 calls give 400 flows, each with its own context."""
    with capture_flows() as flows:
        barrier = threading.Barrier(8)

        @hud_sdk.sync_flow("shared")
        def shared(worker: int, i: int) -> int:
            hud_sdk.set_context(worker=worker, i=i)
            return worker * 1000 + i

        def run(worker: int) -> None:
            barrier.wait()
            for i in range(50):
                assert shared(worker, i) == worker * 1000 + i

        threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = sorted((f.context["worker"], f.context["i"]) for f in flows.flows())
        assert seen == [(w, i) for w in range(8) for i in range(50)]
        assert all(f.span.parent is None for f in flows.flows())


def test_one_flow_object_used_as_a_context_manager_by_many_tasks_at_once_tracks_each_entry():
    """A single async_flow object entered by 50 concurrent tasks yields 50 flows with their own data."""
    with capture_flows() as flows:
        flow = hud_sdk.async_flow("shared-block")

        async def worker(i: int) -> None:
            async with flow:
                hud_sdk.set_context(i=i)
                await asyncio.sleep(0.001 * (i % 5))

        async def main() -> None:
            await asyncio.gather(*(worker(i) for i in range(50)))

        asyncio.run(main())
        assert sorted(f.context["i"] for f in flows.flows()) == list(range(50))


def test_spans_started_inside_a_flow_are_its_children_and_carry_the_flow_name():
    """Child spans from any tracer join the flow's trace under the flow span, stamped hud.flow.name."""
    with capture_flows() as flows:
        tracer = flows.tracer_provider.get_tracer("db")
        with hud_sdk.sync_flow("report"), tracer.start_as_current_span("query"):
            with tracer.start_as_current_span("fetch"):
                pass
        fetch, query, report = flows.spans()
        assert whole(query)["parent"] == format(report.context.span_id, "016x")
        assert whole(fetch)["parent"] == format(query.context.span_id, "016x")
        assert fetch.context.trace_id == report.context.trace_id
        assert dict(fetch.attributes) == dict(query.attributes) == {"hud.flow.name": "report"}


def test_a_flow_started_under_an_application_span_is_a_root_linked_to_it():
    """Flows are root spans; the span that was current is kept as a link, not a parent."""
    with capture_flows() as flows:
        tracer = flows.tracer_provider.get_tracer("script")
        with tracer.start_as_current_span("main") as main, hud_sdk.sync_flow("step"):
            assert trace.get_current_span().get_span_context().trace_id != main.get_span_context().trace_id
        step, main_span = flows.spans()
        assert step.parent is None
        assert [link.context.span_id for link in step.links] == [main_span.context.span_id]


def test_bare_decorator_without_a_name_keeps_the_program_working():
    """@sync_flow with no parentheses is a misuse; the function still works and is named after itself."""
    with capture_flows() as flows:
        with pytest.warns(UserWarning, match="without a name"):

            @hud_sdk.sync_flow
            def nightly() -> int:
                return 7

        assert nightly() == 7
        assert [f.name for f in flows.flows()] == [nightly.__qualname__]


def test_functools_partial_and_callable_objects_can_be_decorated():
    """Callables that are not functions keep working under the decorator."""
    with capture_flows() as flows:
        part = hud_sdk.sync_flow("partial")(functools.partial(plain, 1))
        assert part("y") == "1yFalse"
        assert [f.name for f in flows.flows()] == ["partial"]
