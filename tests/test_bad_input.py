"""Bad input, property-based: every public function and keyword given arbitrary values.

What each property proves: no exception escapes into the caller except the caller's own, the caller's
return values come back unchanged, and afterwards a normal flow still exports correctly (hud_otel's
state was never corrupted). Random programs nest every flow form in any order, with ``end_flow`` storms
and unmatched ``start_flow`` calls.

Ordinary wrong values (wrong types, huge strings, NaN, far datetimes, bools where ints go) run with
internal errors re-raised, so any bug the guard would hide fails the test. Hostile objects (whose
``__repr__``, ``__str__``, ``__hash__``... raise) run in production mode, where hud_otel's guard is the
last line of defence, and must still never reach the caller.

Examples per property: ``HUD_OTEL_FUZZ_EXAMPLES`` if set, else 1,000 under ``CI=true`` (a quarter of
that for the random programs), else 100. Under ``CI=true`` the examples are derandomized (the same every
run); locally they are new each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel._invocation import _FRAME
from hud_otel.testing import HudFlows, capture_flows

# Fuzzed decorators with queue arguments warn at decoration time, as they should; thousands of examples
# would bury the run's output in those expected warnings.
pytestmark = pytest.mark.filterwarnings("ignore:hud_otel.*:UserWarning")

_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_EXAMPLES = int(os.environ.get("HUD_OTEL_FUZZ_EXAMPLES", "1000" if _CI else "100"))

settings.register_profile(
    "hud_otel_bad_input",
    max_examples=_EXAMPLES,
    deadline=None,
    # In CI the examples are the same every run, so whether a submission lands never depends on chance;
    # local runs draw new ones and keep exploring (a failure found there gets its regression test).
    derandomize=_CI,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
_PROFILE = settings.get_profile("hud_otel_bad_input")
# Random programs are bigger per example: a quarter as many.
_PROGRAMS = settings(_PROFILE, max_examples=max(25, _EXAMPLES // 4))


# -- values --------------------------------------------------------------------------------------

_OFFSETS = st.sampled_from(
    [
        timezone.utc,
        timezone(timedelta(hours=23, minutes=59)),
        timezone(timedelta(hours=-23, minutes=-59)),
        timezone(timedelta(hours=5, minutes=30)),
    ]
)
DATETIMES = st.one_of(
    st.datetimes(),  # naive, year 1 to 9999
    st.datetimes(timezones=_OFFSETS),  # aware, year 1 to 9999
    st.sampled_from([datetime.min, datetime.max]),
    st.sampled_from([datetime.min, datetime.max]).map(lambda d: d.replace(tzinfo=timezone.utc)),
    st.just(datetime.now(timezone.utc) + timedelta(days=3650)),  # clock skew: enqueued in the future
)
# Long strings at the edges that matter (the 256 and 1,024 caps) and a megabyte, built cheaply.
_HUGE_TEXT = st.builds(
    lambda c, n: c * n, st.characters(), st.sampled_from([0, 255, 256, 257, 1024, 1025, 70_000, 1_100_000])
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(" \t\n\r\x00\u200b\ufeff"), max_size=5),  # blank-ish
    _HUGE_TEXT,
    st.sampled_from(["custom", "queue", "sqs", "kafka", "CUSTOM", "Queue", "x" * 256, "x" * 257]),
)
NUMBERS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),  # NaN and the infinities included
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 2**63, -(2**63) - 1, 10**400]),
    st.complex_numbers(),
    st.decimals(),
    st.fractions(),
)
SCALARS = st.one_of(
    st.none(),
    NUMBERS,
    TEXT,
    st.binary(max_size=64),
    DATETIMES,
    st.timedeltas(),
    st.sampled_from(list(hud.FlowType)),
    st.just(object()),
    st.just(Ellipsis),
)
# No callables and no classes: a callable where a name goes is the bare-decorator form.
ANYTHING = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.frozensets(st.integers(), max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
# Homogeneous lists are kept as lists on the span: exercise them on purpose.
LISTS = st.one_of(
    st.lists(st.text(max_size=5), max_size=100),
    st.lists(st.integers(), max_size=10),
    st.lists(st.floats(), max_size=10),
    st.lists(st.booleans(), max_size=10),
    st.lists(_HUGE_TEXT, max_size=2),
)
VALUES = st.one_of(ANYTHING, LISTS)
CONTEXT = st.dictionaries(st.one_of(st.text(max_size=20), _HUGE_TEXT), VALUES, max_size=8)

FLOW_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "flow_type": st.one_of(st.sampled_from([*hud.FlowType, "custom", "queue"]), ANYTHING),
        "framework": st.one_of(TEXT, ANYTHING),
        "enqueued_at": st.one_of(DATETIMES, ANYTHING),
        "message_count": st.one_of(NUMBERS, ANYTHING),
    },
)
NAMES = st.one_of(st.text(min_size=1, max_size=12), TEXT, ANYTHING)


# -- hostile objects -----------------------------------------------------------------------------


class Boom(Exception):
    """Raised by a hostile object's dunder method."""


def _boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("hostile")


_HOSTILE_METHODS = ["__repr__", "__str__", "__hash__", "__eq__", "__len__", "__bool__", "__format__"]


def _hostile_class(base: type, methods: frozenset[str]) -> type:
    namespace = {m: _boom for m in methods if not (base is object and m == "__len__")}
    return type(f"Hostile{base.__name__.title()}", (base,), namespace)


def _hostile(base: type, methods: frozenset[str]) -> Any:
    cls = _hostile_class(base, methods)
    if base is str:
        return cls("orders")
    if base is int:
        return cls(3)
    if base is float:
        return cls(1.5)
    if base is datetime:
        return cls(2026, 1, 1, tzinfo=timezone.utc)
    return cls()


class _BadOffset(datetime):
    """A datetime whose ``utcoffset`` raises."""

    def utcoffset(self) -> Optional[timedelta]:
        raise Boom("utcoffset")


class _BadAstimezone(datetime):
    """An aware datetime whose ``astimezone`` raises something hud_otel does not expect."""

    def astimezone(self, tz: Any = None) -> datetime:
        raise Boom("astimezone")


class _StrStr(str):
    """A ``str`` whose ``str()`` is not a ``str`` at all."""

    def __str__(self) -> Any:
        return 42


HOSTILE = st.one_of(
    st.builds(
        _hostile,
        st.sampled_from([object, str, int, float, datetime]),
        st.frozensets(st.sampled_from(_HOSTILE_METHODS), min_size=1),
    ),
    st.just(_BadOffset(2026, 1, 1)),
    st.just(_BadAstimezone(2026, 1, 1, tzinfo=timezone.utc)),
    st.just(_StrStr("queue")),
)
HOSTILE_OR_ANY = st.one_of(HOSTILE, ANYTHING)
HOSTILE_KWARGS = st.fixed_dictionaries(
    {},
    optional={k: HOSTILE_OR_ANY for k in ("flow_type", "framework", "enqueued_at", "message_count")},
)


@contextlib.contextmanager
def production_mode() -> Iterator[None]:
    """hud_otel's guard swallows internal errors, as in a user's process."""
    old = os.environ.get("HUD_OTEL_RAISE_INTERNAL")
    os.environ["HUD_OTEL_RAISE_INTERNAL"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["HUD_OTEL_RAISE_INTERNAL"]
        else:
            os.environ["HUD_OTEL_RAISE_INTERNAL"] = old


# -- random programs -----------------------------------------------------------------------------


class UserError(Exception):
    """The user's own exception: it must come back out unchanged."""


RAISES = st.sampled_from([None, None, "user", "exit", "interrupt"])
SYNC_KINDS = st.sampled_from(["plain", "generator", "generator-break"])
ASYNC_KINDS = st.sampled_from(["coroutine", "asyncgen", "asyncgen-break"])

LEAVES = st.one_of(
    st.tuples(st.just("start"), NAMES, FLOW_KWARGS),
    st.tuples(st.just("end"), st.one_of(st.just(()), st.tuples(ANYTHING))),
    st.tuples(st.just("end-storm"), st.integers(1, 20)),
    st.tuples(st.just("context"), CONTEXT),
    st.tuples(st.just("failure"), ANYTHING, CONTEXT),
)


def _programs(with_async: bool) -> st.SearchStrategy[list[Any]]:
    def extend(children: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[list[Any]]:
        blocks = [
            st.tuples(st.just("with"), NAMES, FLOW_KWARGS, children, RAISES),
            st.tuples(st.just("call"), SYNC_KINDS, NAMES, FLOW_KWARGS, children, RAISES),
        ]
        if with_async:
            blocks += [
                st.tuples(st.just("async-with"), NAMES, FLOW_KWARGS, children, RAISES),
                st.tuples(st.just("async-call"), ASYNC_KINDS, NAMES, FLOW_KWARGS, children, RAISES),
            ]
        return st.lists(st.one_of(LEAVES, *blocks), max_size=4)

    return st.recursive(st.lists(LEAVES, max_size=4), extend, max_leaves=10)


def _make_exception(kind: Optional[str]) -> Optional[BaseException]:
    if kind == "user":
        return UserError("the user's own")
    if kind == "exit":
        return SystemExit(3)
    if kind == "interrupt":
        return KeyboardInterrupt()
    return None


class Interpreter:
    """Runs a random program of flow calls, checking every return value and exception on the way."""

    def __init__(self) -> None:
        self.steps = 0

    def leaf(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        self.steps += 1
        if kind == "start":
            hud.start_flow(op[1], **op[2])
        elif kind == "end":
            hud.end_flow(*op[1])
        elif kind == "end-storm":
            for _ in range(op[1]):
                hud.end_flow()
        elif kind == "context":
            hud.set_context(**op[1])
        elif kind == "failure":
            hud.set_failure(op[1], **op[2])
        else:  # pragma: no cover - the strategy only makes the kinds above
            raise AssertionError(kind)

    def run(self, ops: list[Any]) -> None:
        for op in ops:
            kind = op[0]
            if kind == "with":
                self.expect(op[4], lambda op=op: self._with(op))
            elif kind == "call":
                self.expect(op[5], lambda op=op: self._call(op))
            elif kind in ("async-with", "async-call"):
                continue  # inside a sync function of an async program: nothing to await with
            else:
                self.leaf(op)

    def expect(self, raise_kind: Optional[str], body: Any) -> None:
        """Run ``body`` that raises the exception it made (or returns a sentinel); check both."""
        try:
            outcome = body()
        except (UserError, SystemExit, KeyboardInterrupt) as exc:
            assert raise_kind is not None, f"an exception nobody raised escaped: {exc!r}"
            assert getattr(exc, "made_here", False), f"not the user's own exception: {exc!r}"
            return
        assert raise_kind is None, "the user's exception was swallowed"
        assert outcome is not None

    def _with(self, op: tuple[Any, ...]) -> object:
        _, name, kwargs, children, raise_kind = op
        marker = object()
        with hud.sync_flow(name, **kwargs) as entered:
            assert entered is None
            self.run(children)
            _raise(raise_kind)
        return marker

    def _call(self, op: tuple[Any, ...]) -> object:
        _, fn_kind, name, kwargs, children, raise_kind = op
        result = object()
        decorator = hud.sync_flow(name, **kwargs)
        if fn_kind == "plain":

            @decorator
            def plain(a: int, *, b: int) -> object:
                assert (a, b) == (1, 2)
                self.run(children)
                _raise(raise_kind)
                return result

            assert plain(1, b=2) is result
            return result

        @decorator
        def generator() -> Iterator[object]:
            self.run(children)
            _raise(raise_kind)
            yield result
            yield result
            return None

        gen = generator()
        if fn_kind == "generator-break":
            got = next(gen)
            gen.close()
            assert got is result
            return result
        assert list(gen) == [result, result]
        return result


def _raise(kind: Optional[str]) -> None:
    exc = _make_exception(kind)
    if exc is not None:
        exc.made_here = True  # type: ignore[attr-defined]
        raise exc


class AsyncInterpreter(Interpreter):
    """The same, for programs with ``async with`` and async decorated functions."""

    async def arun(self, ops: list[Any]) -> None:
        for op in ops:
            kind = op[0]
            if kind == "with":
                await self.aexpect(op[4], self._awith_sync(op))
            elif kind == "call":
                self.expect(op[5], lambda op=op: self._call(op))
            elif kind == "async-with":
                await self.aexpect(op[4], self._async_with(op))
            elif kind == "async-call":
                await self.aexpect(op[5], self._async_call(op))
            else:
                self.leaf(op)

    async def aexpect(self, raise_kind: Optional[str], body: Any) -> None:
        try:
            outcome = await body
        except (UserError, SystemExit, KeyboardInterrupt) as exc:
            assert raise_kind is not None, f"an exception nobody raised escaped: {exc!r}"
            assert getattr(exc, "made_here", False), f"not the user's own exception: {exc!r}"
            return
        assert raise_kind is None, "the user's exception was swallowed"
        assert outcome is not None

    async def _awith_sync(self, op: tuple[Any, ...]) -> object:
        _, name, kwargs, children, raise_kind = op
        with hud.sync_flow(name, **kwargs):
            await self.arun(children)
            _raise(raise_kind)
        return object()

    async def _async_with(self, op: tuple[Any, ...]) -> object:
        _, name, kwargs, children, raise_kind = op
        async with hud.async_flow(name, **kwargs) as entered:
            assert entered is None
            await self.arun(children)
            _raise(raise_kind)
        return object()

    async def _async_call(self, op: tuple[Any, ...]) -> object:
        _, fn_kind, name, kwargs, children, raise_kind = op
        result = object()
        decorator = hud.async_flow(name, **kwargs)
        if fn_kind == "coroutine":

            @decorator
            async def coroutine(a: int) -> object:
                await self.arun(children)
                _raise(raise_kind)
                return result

            assert await coroutine(1) is result
            return result

        @decorator
        async def agen() -> Any:
            await self.arun(children)
            _raise(raise_kind)
            yield result
            yield result

        stream = agen()
        if fn_kind == "asyncgen-break":
            got = await stream.__anext__()
            await stream.aclose()
            assert got is result
            return result
        assert [x async for x in stream] == [result, result]
        return result


# -- the checks after every example --------------------------------------------------------------


def _assert_flows_well_formed(capture: HudFlows) -> None:
    """Every exported flow span is a root span with a valid name and outcome."""
    for flow in capture.flows():
        assert flow.span.parent is None
        assert isinstance(flow.name, str) and flow.name.strip() and len(flow.name) <= A.MAX_NAME_LENGTH
        assert flow.outcome in (A.OUTCOME_SUCCESS, A.OUTCOME_FAILURE, A.OUTCOME_CANCELLED)
        assert len(flow.context) <= A.MAX_CONTEXT_KEYS
        for value in flow.context.values():
            if isinstance(value, str):
                assert len(value) <= A.MAX_CONTEXT_VALUE_LENGTH


def _assert_state_intact(capture: HudFlows) -> None:
    """Nothing is left active here, and a normal flow still exports exactly as it should."""
    assert _FRAME.get() is None
    assert not trace.get_current_span().get_span_context().is_valid
    _assert_flows_well_formed(capture)
    capture.clear()
    with hud.sync_flow("sentinel", flow_type=hud.FlowType.QUEUE, framework="sqs", message_count=2):
        hud.set_context(check="ok")
    flows = capture.flows()
    assert len(flows) == 1, flows
    flow = flows[0]
    assert (flow.name, flow.flow_type, flow.framework, flow.outcome) == (
        "sentinel",
        "queue",
        "sqs",
        "success",
    )
    assert flow.context == {"check": "ok"}
    assert flow.message_count == 2
    assert flow.span.name == "process sentinel"
    assert flow.span.parent is None
    assert _FRAME.get() is None
    capture.clear()


@contextlib.contextmanager
def _registered() -> Iterator[HudFlows]:
    with capture_flows() as capture:
        # Admitted first, so the name cap that random names fill never applies to it.
        _assert_state_intact(capture)
        yield capture
        _assert_state_intact(capture)


# -- the properties ------------------------------------------------------------------------------


def test_flow_constructors_take_any_arguments():
    """``sync_flow``/``async_flow`` with any name and keywords: the ``with`` body and the decorated
    function run once with their return value unchanged, and the state stays intact."""
    with _registered() as capture:

        @_PROFILE
        @given(name=NAMES, kwargs=FLOW_KWARGS, value=ANYTHING)
        def check(name: Any, kwargs: dict[str, Any], value: Any) -> None:
            calls = []
            with hud.sync_flow(name, **kwargs):
                calls.append("with")

            @hud.sync_flow(name, **kwargs)
            def fn(x: Any) -> Any:
                calls.append("call")
                return x

            assert fn(value) is value

            async def main() -> Any:
                async with hud.async_flow(name, **kwargs):
                    calls.append("async with")

                @hud.async_flow(name, **kwargs)
                async def coro(x: Any) -> Any:
                    calls.append("await")
                    return x

                return await coro(value)

            assert asyncio.run(main()) is value
            assert calls == ["with", "call", "async with", "await"]
            _assert_state_intact(capture)

        check()


def test_start_and_end_flow_take_any_arguments():
    """``start_flow`` with any name and keywords, then ``end_flow`` with any reason: both return None,
    and a flow that started ends failed exactly when the reason is neither None nor empty."""
    with _registered() as capture:

        @_PROFILE
        @given(name=NAMES, kwargs=FLOW_KWARGS, reason=st.one_of(st.none(), st.just(""), ANYTHING))
        def check(name: Any, kwargs: dict[str, Any], reason: Any) -> None:
            assert hud.start_flow(name, **kwargs) is None
            assert hud.end_flow(reason) is None
            flows = capture.flows()
            assert len(flows) <= 1
            if flows:
                expected = A.OUTCOME_SUCCESS if reason is None or reason == "" else A.OUTCOME_FAILURE
                assert flows[0].outcome == expected
            _assert_state_intact(capture)

        check()


@pytest.mark.slow
def test_set_context_and_set_failure_take_any_values():
    """``set_context``/``set_failure`` with any keys, values and error names, inside and outside a flow:
    the flow exports with the values capped (64 keys, 1024 characters) and fails with a string error."""
    with _registered() as capture:

        @_PROFILE
        @given(values=CONTEXT, error=st.one_of(st.none(), ANYTHING), failure_values=CONTEXT)
        def check(values: dict[str, Any], error: Any, failure_values: dict[str, Any]) -> None:
            hud.set_context(**values)  # outside any flow: a no-op
            hud.set_failure(error, **failure_values)
            with hud.sync_flow("fuzzed-context"):
                hud.set_context(**values)
                hud.set_failure(error, **failure_values)
            flow = capture.flow("fuzzed-context")
            assert flow.outcome == A.OUTCOME_FAILURE
            assert isinstance(flow.error, str) and flow.error.strip()
            assert len(flow.error) <= A.MAX_NAME_LENGTH
            assert flow.span.status.status_code == trace.StatusCode.ERROR
            _assert_state_intact(capture)

        check()


def test_random_sync_programs_leave_no_trace():
    """Random programs of nested ``with`` blocks, decorated functions and generators, ``start_flow``
    without ``end_flow``, ``end_flow`` storms and context calls, run in the caller's context: only the
    user's own exceptions escape, return values are unchanged, and afterwards this context holds no
    flow and a normal flow exports correctly."""
    with _registered() as capture:

        @_PROGRAMS
        @given(program=_programs(with_async=False))
        def check(program: list[Any]) -> None:
            interpreter = Interpreter()
            interpreter.run(program)
            # An unmatched start_flow leaves its flow open in this context by design: end_flow closes
            # it. Close every one the program may have left, then nothing may remain.
            for _ in range(_count_starts(program)):
                hud.end_flow()
            _assert_state_intact(capture)

        check()


def test_random_async_programs_leave_no_trace():
    """The same random programs with ``async with`` and async decorated functions and generators mixed
    in, each run as an asyncio task: only the user's own exceptions escape, and afterwards a normal flow
    exports correctly."""
    with _registered() as capture:

        @_PROGRAMS
        @given(program=_programs(with_async=True))
        def check(program: list[Any]) -> None:
            interpreter = AsyncInterpreter()
            asyncio.run(interpreter.arun(program))
            _assert_state_intact(capture)

        check()


def test_hostile_objects_never_reach_the_caller():
    """Objects whose ``__repr__``, ``__str__``, ``__hash__``, ``__eq__``, ``__len__`` or ``utcoffset``
    raise, given as any argument of any public function in production mode: nothing escapes, the
    user's code runs once, and afterwards a normal flow exports correctly."""
    with _registered() as capture, production_mode():

        @_PROFILE
        @given(
            name=HOSTILE_OR_ANY,
            kwargs=HOSTILE_KWARGS,
            key=st.text(max_size=5).filter(lambda k: k not in ("error", "reason")),
            value=HOSTILE_OR_ANY,
            reason=HOSTILE_OR_ANY,
        )
        def check(name: Any, kwargs: dict[str, Any], key: str, value: Any, reason: Any) -> None:
            calls = []
            with hud.sync_flow(name, **kwargs):
                hud.set_context(**{key: value})
                hud.set_failure(value, reason=reason, **{key: value})
                calls.append("with")

            @hud.sync_flow(name, **kwargs)
            def fn() -> str:
                hud.set_context(**{key: value})
                calls.append("call")
                return "result"

            assert fn() == "result"
            hud.start_flow(name, **kwargs)
            hud.set_context(**{key: value})
            hud.end_flow(reason)
            hud.end_flow(reason)
            assert calls == ["with", "call"]
            _assert_state_intact(capture)

        check()


def test_flush_and_shutdown_take_any_timeout():
    """``flush`` and ``shutdown`` with any timeout value never raise, and hud_otel works after."""

    @_PROFILE
    @given(timeout=st.one_of(NUMBERS, ANYTHING))
    def check(timeout: Any) -> None:
        with capture_flows() as capture:
            with hud.sync_flow("before-flush"):
                pass
            result = hud.flush(timeout)
            assert isinstance(result, bool)
            assert capture.flow("before-flush").outcome == A.OUTCOME_SUCCESS
            hud.shutdown(timeout)
            hud.shutdown(timeout)
        with _registered():
            pass

    check()


def test_calls_before_register_run_user_code_untouched():
    """Before ``register()``, every public function with any arguments leaves the user's code and its
    return value untouched and records nothing."""

    @_PROFILE
    @given(name=NAMES, kwargs=FLOW_KWARGS, values=CONTEXT, value=ANYTHING)
    def check(name: Any, kwargs: dict[str, Any], values: dict[str, Any], value: Any) -> None:
        @hud.sync_flow(name, **kwargs)
        def fn() -> Any:
            hud.set_context(**values)
            hud.set_failure(value, **values)
            return value

        with hud.sync_flow(name, **kwargs):
            hud.start_flow(name, **kwargs)
            assert fn() is value
            hud.end_flow(value)
        assert _FRAME.get() is None

    check()


def _count_starts(program: list[Any]) -> int:
    count = 0
    for op in program:
        if op[0] == "start":
            count += 1
        elif op[0] in ("with", "async-with"):
            count += _count_starts(op[3])
        elif op[0] in ("call", "async-call"):
            count += _count_starts(op[4])
    return count


if __name__ == "__main__":  # pragma: no cover - handy for a long local run
    sys.exit(os.system(f"{sys.executable} -m pytest -q {__file__}"))


# -- regressions the properties above found ------------------------------------------------------


def test_with_block_ends_its_flow_despite_an_unmatched_start_flow(hud_flows):
    """A ``start_flow`` without its ``end_flow`` inside a ``with`` block (an exception between them)
    no longer keeps the block's flow open forever: the block's flow ends failed, nothing stays active,
    and the next flow in the same context is recorded instead of skipped as nested."""
    with contextlib.suppress(RuntimeError):
        with hud.sync_flow("outer"):
            hud.start_flow("inner")  # nested: skipped, its frame is left open by the exception
            raise RuntimeError("work failed before end_flow")
    assert _FRAME.get() is None
    with hud.sync_flow("next"):
        pass
    assert [(f.name, f.outcome, f.error) for f in hud_flows.flows()] == [
        ("outer", A.OUTCOME_FAILURE, "RuntimeError"),
        ("next", A.OUTCOME_SUCCESS, None),
    ]
    assert hud_flows.skipped() == {A.REASON_NESTED: 1}


def test_unmatched_start_flow_inside_a_skipped_block_ends_with_the_block(hud_flows):
    """A flow started by ``start_flow`` inside a skipped ``with`` block (invalid name) and never ended
    ends when the block ends, instead of staying open and unexported."""

    async def main() -> None:
        async with hud.async_flow(""):
            hud.start_flow("manual")
        assert _FRAME.get() is None

    asyncio.run(main())
    assert [(f.name, f.outcome) for f in hud_flows.flows()] == [("manual", A.OUTCOME_SUCCESS)]


def test_message_count_beyond_64_bits_is_ignored(hud_flows):
    """A ``message_count`` over 2**63-1 is ignored with a warning (OTLP carries int64): the flow still
    exports, without a count that would break the metric and the span batch."""
    with hud.sync_flow("orders", flow_type=hud.FlowType.QUEUE, message_count=2**63):
        pass
    with hud.sync_flow("orders", flow_type=hud.FlowType.QUEUE, message_count=2**63 - 1):
        pass
    first, second = hud_flows.flows("orders")
    assert first.outcome == second.outcome == A.OUTCOME_SUCCESS
    assert first.message_count is None
    assert second.message_count == 2**63 - 1
    assert [p.value for p in hud_flows.metric_points(A.METRIC_MESSAGES)] == [2**63 - 1]


def test_unmatched_start_flow_in_a_skipped_generator_step_leaves_no_active_span(hud_flows):
    """A generator whose flow is skipped (invalid name) and whose step calls ``start_flow`` without
    ``end_flow``: when the step ends, neither hud_otel's frame nor OpenTelemetry's current span stays
    active in the consumer, and the manual flow ends with the step instead of never."""

    @hud.sync_flow("")
    def numbers() -> Iterator[int]:
        hud.start_flow("manual")
        yield 1

    assert list(numbers()) == [1]
    assert _FRAME.get() is None
    assert not trace.get_current_span().get_span_context().is_valid
    assert [(f.name, f.outcome) for f in hud_flows.flows()] == [("manual", A.OUTCOME_SUCCESS)]


def test_str_subclass_names_land_on_the_wire_as_plain_strings(hud_flows):
    """A flow name, framework or failure name that is a ``str`` subclass (a str-mixin enum member)
    lands on the span as the plain string value, whatever the subclass's ``__str__``/``__format__``."""

    class Queues(str, enum.Enum):
        ORDERS = "orders"

    class Loud(str):
        def __str__(self) -> Any:
            return 42

    with hud.sync_flow(Queues.ORDERS, flow_type=hud.FlowType.QUEUE, framework=Loud("sqs")):
        hud.set_failure(Loud("Rejected"))
    flow = hud_flows.flow("orders")
    assert flow.span.name == "process orders"
    attrs = flow.span.attributes or {}
    for key in (A.FLOW_NAME, A.MESSAGING_DESTINATION_NAME, A.FRAMEWORK, A.FLOW_ERROR, A.ERROR_TYPE):
        assert type(attrs[key]) is str, key
    assert (attrs[A.FLOW_NAME], attrs[A.FRAMEWORK], attrs[A.FLOW_ERROR]) == ("orders", "sqs", "Rejected")


def test_decorator_queue_argument_warning_takes_any_name(hud_flows):
    """The decoration-time warning about ``enqueued_at``/``message_count`` never raises, whatever the
    name (an unhashable str subclass, a megabyte long, a list), and quotes it shortened; the flow of
    the unhashable str subclass is recorded like any other."""

    class Unhashable(str):
        __hash__ = None  # type: ignore[assignment]

    for name in (Unhashable("orders"), "n" * 1_000_000, ["a", "list"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            @hud.sync_flow(name, message_count=1)
            def fn() -> str:
                return "ok"

        assert fn() == "ok"
        assert [len(str(w.message)) < 300 for w in caught] == [True]
    # The unhashable str subclass is a valid name: its flow is recorded under the plain string.
    assert [(f.name, type(f.span.attributes[A.FLOW_NAME])) for f in hud_flows.flows()] == [("orders", str)]


# -- configuration: the key-handling rules of CONTRACT section 4, fuzzed --------------------------

_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=24).map(
    lambda t: "sk-" + t
)
_HOSTS = st.sampled_from(
    ["127.0.0.1", "localhost", "[::1]", "api.hud.example.com", "10.0.0.7", "collector", "app.localhost"]
)
_ENDPOINTS = st.one_of(
    st.builds(
        lambda scheme, host, port: f"{scheme}{host}{port}",
        st.sampled_from(["http://", "https://", "", "grpc://", "HTTP://"]),
        _HOSTS,
        st.sampled_from(["", ":4317", ":4318", ":0", ":99999", ":x"]),
    ),
    TEXT,
    ANYTHING,
)
_ARGUMENT_VALUES = {
    "service": st.one_of(TEXT, ANYTHING),
    "endpoint": _ENDPOINTS,
    "protocol": st.one_of(st.sampled_from(["grpc", "http/protobuf", "http/json", "HTTP/PROTOBUF"]), ANYTHING),
    "headers": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), ANYTHING),
    "insecure": st.one_of(st.booleans(), ANYTHING),
    "max_flow_names": st.one_of(NUMBERS, ANYTHING),
    "max_queue_size": st.one_of(NUMBERS, ANYTHING),
    "export_timeout_s": st.one_of(NUMBERS, ANYTHING),
    "metric_interval_s": st.one_of(NUMBERS, ANYTHING),
    "exit_timeout_s": st.one_of(NUMBERS, ANYTHING),
    "disabled": st.one_of(st.booleans(), ANYTHING),
}
_ENV_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "HUD_OTEL_ENDPOINT": _ENDPOINTS.filter(lambda v: isinstance(v, str)),
        "OTEL_EXPORTER_OTLP_ENDPOINT": _ENDPOINTS.filter(lambda v: isinstance(v, str)),
        "HUD_OTEL_INSECURE": st.sampled_from(["true", "false", "1", "maybe", ""]),
        "HUD_OTEL_PROTOCOL": st.sampled_from(["grpc", "http/protobuf", "bogus"]),
        "OTEL_EXPORTER_OTLP_HEADERS": st.just("x-user-pipeline=user-secret-77"),
        "HUD_OTEL_MAX_QUEUE_SIZE": st.sampled_from(["0", "-3", "12", "1e9", "lots"]),
    },
)


def test_configuration_keeps_the_key_rules_under_any_input(caplog):
    """``register()``'s settings resolved from arbitrary arguments and variables (an API key included):
    only ``TypeError``/``ValueError`` for invalid explicit arguments; the key never shows in a log line
    or the settings' ``repr``; it travels only as the authorization header; never in plain text to a
    host that is not loopback unless insecure is set (explicitly: refused with ValueError; from
    variables: nothing exported); the user's pipeline headers never reach a separately set endpoint."""
    from hud_otel._config import API_KEY_HEADER, endpoint_host, is_loopback, resolve

    @_PROFILE
    @given(
        key=_KEYS,
        key_from_env=st.booleans(),
        arguments=st.fixed_dictionaries({}, optional=_ARGUMENT_VALUES),
        env=_ENV_VALUES,
    )
    def check(key: str, key_from_env: bool, arguments: dict[str, Any], env: dict[str, str]) -> None:
        arguments = dict(arguments)
        env = dict(env)
        if key_from_env:
            env["HUD_OTEL_API_KEY"] = key
        else:
            arguments["api_key"] = key
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            try:
                settings = resolve(arguments, env)
            except (TypeError, ValueError) as exc:
                assert key not in str(exc)
                settings = None
        assert key not in caplog.text
        if settings is None:
            return
        assert key not in repr(settings)
        headers = settings.export_headers()
        assert headers.get(API_KEY_HEADER) == f"Bearer {key}"
        assert [name for name, value in headers.items() if key in value] == [API_KEY_HEADER]
        if settings.hud_endpoint:
            assert "user-secret-77" not in str(headers)
        if settings.plaintext and not settings.insecure and settings.refused is None:
            assert is_loopback(endpoint_host(settings.endpoint)), settings.endpoint

    check()
