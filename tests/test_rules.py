"""One test per row of the rules table of CONTRACT section 2, named after the row."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry.trace import SpanKind

import hud_otel as hud_sdk
from hud_otel import _invocation
from hud_otel.testing import capture_flows
from tests.spans import custom, points, sid, whole

MOD = __name__


def hud_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hud_otel" and r.levelno >= logging.WARNING]


def test_any_call_before_register_runs_code_untouched_records_nothing_and_warns_once(caplog):
    """Before register(): every API runs the user's code as is, records nothing, warns once a process."""

    @hud_sdk.sync_flow("early")
    def early(x):
        return x + 1

    @hud_sdk.async_flow("early-async")
    async def early_async():
        return "a"

    @hud_sdk.sync_flow("early-gen")
    def early_gen():
        yield from (1, 2)

    caplog.set_level(logging.DEBUG, logger="hud_otel")
    assert early(1) == 2
    assert asyncio.run(early_async()) == "a"
    assert list(early_gen()) == [1, 2]
    with hud_sdk.sync_flow("early-block"):
        hud_sdk.set_context(a=1)
        hud_sdk.set_failure("X")
    hud_sdk.start_flow("early-manual")
    hud_sdk.end_flow()
    assert hud_warnings(caplog) == [
        "hud_otel: a flow API was called before hud_otel.register(); it is not recorded "
        "(call register() once at start-up)"
    ]
    # A decorator made before register() tracks the calls made after it.
    with capture_flows() as flows:
        assert early(2) == 3
        assert [f.name for f in flows.flows()] == ["early"]
        assert flows.skipped() == {}


@pytest.mark.parametrize("bad", [None, 42, "", "   ", "x" * 257, b"bytes", ["list"]])
def test_name_not_a_str_empty_blank_or_over_256_chars_is_skipped_counted_and_warned_once(bad, caplog):
    """A bad name: the code runs, no span, hud.flow.skipped{reason=invalid_name} per call, one warning."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows() as flows:

        @hud_sdk.sync_flow(bad)
        def job():
            return "ran"

        assert job() == "ran"
        assert job() == "ran"
        with hud_sdk.sync_flow(bad):
            pass
        hud_sdk.start_flow(bad)
        hud_sdk.end_flow()
        assert flows.spans() == []
        assert flows.skipped() == {"invalid_name": 4}
        assert len([m for m in hud_warnings(caplog) if "flow name" in m]) == 1


def test_name_of_exactly_256_characters_is_valid():
    """The length limit is inclusive: a 256-character name is a flow."""
    with capture_flows() as flows:
        with hud_sdk.sync_flow("n" * 256):
            pass
        assert [f.name for f in flows.flows()] == ["n" * 256]


def test_distinct_flows_beyond_the_cap_are_skipped_seen_ones_keep_working(caplog):
    """Past max_flow_names distinct (type, framework, name), new flows are skipped; old ones still work."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows(max_flow_names=3) as flows:
        for name in ("a", "b", "c", "d", "e"):
            with hud_sdk.sync_flow(name):
                pass
        # The same name as a queue flow is a distinct key.
        with hud_sdk.sync_flow("a", flow_type=hud_sdk.FlowType.QUEUE):
            pass
        with hud_sdk.sync_flow("a"):
            pass
        assert [f.name for f in flows.flows()] == ["a", "b", "c", "a"]
        assert flows.skipped() == {"name_cap": 3}
        assert len([m for m in hud_warnings(caplog) if "distinct flow names" in m]) == 1


def test_flow_started_while_a_flow_is_active_is_skipped_and_helpers_act_on_the_parent():
    """A nested flow makes no span; set_context/set_failure inside it land on the parent flow."""
    with capture_flows() as flows:

        @hud_sdk.sync_flow("inner")
        def inner():
            hud_sdk.set_context(inner_key="from-inner")
            return "inner-result"

        @hud_sdk.sync_flow("outer")
        def outer():
            assert inner() == "inner-result"
            with hud_sdk.sync_flow("inner-block"):
                hud_sdk.set_failure("InnerFailed", reason="bad row")
            hud_sdk.start_flow("inner-manual")
            hud_sdk.set_context(manual=True)
            hud_sdk.end_flow()
            hud_sdk.set_context(after=1)

        outer()
        (span,) = flows.spans()
        assert whole(span) == {
            "name": "outer",
            "kind": "INTERNAL",
            "parent": None,
            "attributes": custom(
                "outer",
                f"{MOD}.test_flow_started_while_a_flow_is_active_is_skipped_and_helpers_act_on_the_parent"
                ".<locals>.outer",
                **{
                    "hud.context.inner_key": "from-inner",
                    "hud.context.reason": "bad row",
                    "hud.context.manual": True,
                    "hud.context.after": 1,
                    "hud.flow.outcome": "failure",
                    "error.type": "InnerFailed",
                    "hud.flow.error": "InnerFailed",
                },
            ),
            "status": ("ERROR", "bad row"),
            "links": [],
            "events": [],
        }
        assert flows.skipped() == {"nested": 3}


def test_flow_started_inside_an_active_server_or_consumer_span_is_skipped_as_in_request():
    """Inside a SERVER or CONSUMER span, even under INTERNAL spans, a flow is skipped (in_request)."""
    with capture_flows() as flows:
        tracer = flows.tracer_provider.get_tracer("app")
        for kind in (SpanKind.SERVER, SpanKind.CONSUMER):
            with tracer.start_as_current_span("GET /orders", kind=kind) as request:
                with tracer.start_as_current_span("handler"):
                    with hud_sdk.sync_flow("in-handler"):
                        hud_sdk.set_context(order_id=7)
            assert request.attributes["hud.context.order_id"] == 7
        assert flows.flows() == []
        assert flows.skipped() == {"in_request": 2}


def test_context_says_a_flow_is_active_but_it_has_ended_starts_a_new_root_flow_linked_to_it():
    """Work that outlives its flow (a thread handed the flow's context) starts a root flow linked to it."""
    import contextvars

    with capture_flows() as flows:
        handed: list[contextvars.Context] = []
        with hud_sdk.sync_flow("parent"):
            handed.append(contextvars.copy_context())
        done = threading.Event()

        def later():
            with hud_sdk.sync_flow("child"):
                pass
            done.set()

        threading.Thread(target=lambda: handed[0].run(later)).start()
        assert done.wait(5)
        parent, child = flows.spans()
        assert whole(child) == {
            "name": "child",
            "kind": "INTERNAL",
            "parent": None,
            "attributes": custom("child", **{"hud.flow.outcome": "success"}),
            "status": ("UNSET", None),
            "links": [sid(parent)],
            "events": [],
        }
        assert child.context.trace_id != parent.context.trace_id
        assert flows.skipped() == {}


def test_end_flow_with_no_open_start_flow_in_this_context_is_skipped_with_one_warning(caplog):
    """An unmatched end_flow changes nothing and warns once; it never ends a decorator's flow."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows() as flows:
        hud_sdk.end_flow()
        hud_sdk.end_flow("Reason")
        with hud_sdk.sync_flow("block"):
            hud_sdk.end_flow()
        assert [(f.name, f.outcome) for f in flows.flows()] == [("block", "success")]
        assert len([m for m in hud_warnings(caplog) if "end_flow()" in m]) == 1


@pytest.mark.parametrize(
    ("flow_type", "enqueued_at"),
    [
        ("queue", datetime(2026, 6, 17, 12, 0, 0)),  # naive
        ("queue", "2026-06-17T12:00:00Z"),  # not a datetime
        ("queue", 1750000000),
        ("custom", datetime(2026, 6, 17, 12, 0, 0, tzinfo=timezone.utc)),  # on a custom flow
    ],
)
def test_enqueued_at_naive_not_a_datetime_or_on_a_custom_flow_is_ignored_with_one_warning(
    flow_type, enqueued_at, caplog
):
    """A bad enqueued_at: the flow is recorded without queue-wait data, and one warning is given."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows() as flows:
        for _ in range(2):
            with hud_sdk.sync_flow("orders", flow_type=flow_type, enqueued_at=enqueued_at):
                pass
        spans = flows.spans()
        assert len(spans) == 2
        for span in spans:
            assert "hud.queue.enqueued_at" not in span.attributes
            assert "hud.queue.e2e_duration_ms" not in span.attributes
        assert len([m for m in hud_warnings(caplog) if "enqueued_at" in m]) == 1
        assert points(flows, "hud.flow.e2e_duration") == {}


@pytest.mark.parametrize("count", [True, False, 1.5, "3", -1])
def test_message_count_not_an_int_a_bool_or_negative_is_ignored_with_one_warning(count, caplog):
    """A bad message_count is left out of the span and the messages counter, with one warning."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows() as flows:
        for _ in range(2):
            hud_sdk.start_flow("orders", flow_type="queue", message_count=count)
            hud_sdk.end_flow()
        for span in flows.spans():
            assert "hud.queue.message_count" not in span.attributes
            assert "messaging.batch.message_count" not in span.attributes
        assert len([m for m in hud_warnings(caplog) if "message_count" in m]) == 1
        assert points(flows, "hud.flow.messages") == {}


def test_enqueued_at_and_message_count_given_to_a_decorator_are_ignored_with_a_warning_at_decoration():
    """The decorator has no per-message data: the arguments are ignored, warned once at the user's line."""
    with capture_flows() as flows:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            @hud_sdk.sync_flow(
                "orders",
                flow_type="queue",
                enqueued_at=datetime.now(timezone.utc),
                message_count=5,
            )
            def handle():
                return "handled"

        assert [(w.category, w.filename) for w in caught] == [(UserWarning, __file__)]
        assert handle() == "handled"
        (span,) = flows.spans()
        assert "hud.queue.enqueued_at" not in span.attributes
        assert "hud.queue.message_count" not in span.attributes


def test_exception_escaping_a_decorated_function_or_with_body_fails_the_flow_and_is_reraised_unchanged():
    """error = exception class name, an exception event with the stack, the same exception object re-raised."""
    with capture_flows() as flows:
        boom = ValueError("bad input")

        @hud_sdk.sync_flow("decorated")
        def decorated():
            raise boom

        with pytest.raises(ValueError) as raised:
            decorated()
        assert raised.value is boom
        with pytest.raises(KeyError), hud_sdk.sync_flow("block"):
            raise KeyError("k")
        first, second = flows.spans()
        assert whole(first)["status"] == ("ERROR", "ValueError: bad input")
        assert whole(first)["events"] == ["exception"]
        assert first.events[0].attributes["exception.type"] == "ValueError"
        assert "Traceback" in first.events[0].attributes["exception.stacktrace"]
        assert whole(second) == {
            "name": "block",
            "kind": "INTERNAL",
            "parent": None,
            "attributes": custom(
                "block",
                **{"hud.flow.outcome": "failure", "error.type": "KeyError", "hud.flow.error": "KeyError"},
            ),
            "status": ("ERROR", "KeyError: 'k'"),
            "links": [],
            "events": ["exception"],
        }


def test_systemexit_zero_or_none_generatorexit_and_a_consumer_break_out_of_a_generator_are_success():
    """Normal ways of stopping are successes, not failures."""
    with capture_flows() as flows:
        for code in (0, None):
            with pytest.raises(SystemExit), hud_sdk.sync_flow(f"exit-{code}"):
                raise SystemExit(code)

        @hud_sdk.sync_flow("gen")
        def numbers():
            yield from range(10)

        for n in numbers():
            if n == 2:
                break
        gen = numbers()
        next(gen)
        gen.close()
        outcomes = [(f.name, f.outcome, f.error) for f in flows.flows()]
        assert outcomes == [
            ("exit-0", "success", None),
            ("exit-None", "success", None),
            ("gen", "success", None),
            ("gen", "success", None),
        ]


def test_systemexit_non_zero_and_keyboardinterrupt_fail_the_flow_with_the_class_name():
    """SystemExit(3) and KeyboardInterrupt are failures named after their class, and still propagate."""
    with capture_flows() as flows:
        with pytest.raises(SystemExit), hud_sdk.sync_flow("exit-3"):
            raise SystemExit(3)
        with pytest.raises(KeyboardInterrupt), hud_sdk.sync_flow("interrupted"):
            raise KeyboardInterrupt
        assert [(f.name, f.outcome, f.error) for f in flows.flows()] == [
            ("exit-3", "failure", "SystemExit"),
            ("interrupted", "failure", "KeyboardInterrupt"),
        ]


def test_asyncio_cancellederror_is_outcome_cancelled_and_not_a_failure():
    """A cancelled async flow: outcome cancelled, status unset, not counted with the failures."""
    with capture_flows() as flows:

        @hud_sdk.async_flow("slow")
        async def slow():
            await asyncio.sleep(10)

        async def main():
            task = asyncio.create_task(slow())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        (span,) = flows.spans()
        assert span.attributes["hud.flow.outcome"] == "cancelled"
        assert whole(span)["status"] == ("UNSET", None)
        assert "error.type" not in span.attributes
        (key,) = points(flows, "hud.flow.duration")
        assert dict(key)["hud.flow.outcome"] == "cancelled"


def test_set_failure_then_the_flow_ends_without_exception_fails_it_values_to_context_reason_to_status():
    """set_failure(error, reason=..., k=v): failed with error, values in context, reason as description."""
    with capture_flows() as flows:
        with hud_sdk.sync_flow("batch"):
            hud_sdk.set_failure("BatchRejected", reason="3 rows invalid", rows=3)
        (span,) = flows.spans()
        assert whole(span) == {
            "name": "batch",
            "kind": "INTERNAL",
            "parent": None,
            "attributes": custom(
                "batch",
                **{
                    "hud.context.reason": "3 rows invalid",
                    "hud.context.rows": 3,
                    "hud.flow.outcome": "failure",
                    "error.type": "BatchRejected",
                    "hud.flow.error": "BatchRejected",
                },
            ),
            "status": ("ERROR", "3 rows invalid"),
            "links": [],
            "events": [],
        }


@pytest.mark.parametrize(
    ("reason", "outcome", "error"),
    [
        (None, "success", None),
        ("", "success", None),
        ("UpstreamTimeout", "failure", "UpstreamTimeout"),
        (404, "failure", "404"),
    ],
)
def test_end_flow_failure_reason_fails_unless_none_or_empty_and_a_non_str_is_turned_to_str(
    reason, outcome, error
):
    """end_flow(reason): failed with that reason; None and "" mean success; 404 becomes "404"."""
    with capture_flows() as flows:
        hud_sdk.start_flow("cron")
        hud_sdk.end_flow(reason)
        (flow,) = flows.flows()
        assert (flow.outcome, flow.error) == (outcome, error)
        expected_status = ("ERROR", error) if error else ("UNSET", None)
        assert whole(flow.span)["status"] == expected_status


def test_set_failure_and_an_escaping_exception_the_set_failure_name_wins_and_the_exception_event_stays():
    """The user's own word wins as the error; the exception still gets its event."""
    with capture_flows() as flows:
        with pytest.raises(RuntimeError), hud_sdk.sync_flow("job"):
            hud_sdk.set_failure("CleanupFailed")
            raise RuntimeError("disk full")
        (span,) = flows.spans()
        assert span.attributes["error.type"] == "CleanupFailed"
        assert span.attributes["hud.flow.error"] == "CleanupFailed"
        assert whole(span)["events"] == ["exception"]
        assert whole(span)["status"] == ("ERROR", "RuntimeError: disk full")


def test_set_failure_or_set_context_called_again_the_later_call_wins_key_by_key():
    """Later calls overwrite the keys they name and leave the others."""
    with capture_flows() as flows:
        with hud_sdk.sync_flow("job"):
            hud_sdk.set_context(a=1, b=2)
            hud_sdk.set_context(b=3, c=4)
            hud_sdk.set_failure("First", reason="one")
            hud_sdk.set_failure("Second")
        (span,) = flows.spans()
        attrs = span.attributes
        assert (attrs["hud.context.a"], attrs["hud.context.b"], attrs["hud.context.c"]) == (1, 3, 4)
        assert attrs["hud.flow.error"] == "Second"
        assert whole(span)["status"] == ("ERROR", "Second")


def test_set_context_or_set_failure_outside_any_flow_is_a_noop_with_one_warning(caplog):
    """Outside a flow the helpers record nothing and each warns once."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows() as flows:
        for _ in range(3):
            hud_sdk.set_context(a=1)
            hud_sdk.set_failure("X")
        assert flows.spans() == []
        messages = hud_warnings(caplog)
        assert len([m for m in messages if "set_context() outside" in m]) == 1
        assert len([m for m in messages if "set_failure() outside" in m]) == 1


def test_an_internal_error_is_logged_once_and_the_user_code_goes_on(monkeypatch, caplog):
    """hud_otel's own bug never reaches the user (outside our test suite's re-raise mode)."""
    monkeypatch.delenv("HUD_OTEL_RAISE_INTERNAL")
    caplog.set_level(logging.WARNING, logger="hud_otel")

    def broken(*args, **kwargs):
        raise RuntimeError("hud_otel bug")

    with capture_flows() as flows:
        monkeypatch.setattr(_invocation, "_start", broken)

        @hud_sdk.sync_flow("job")
        def job():
            return "result"

        assert [job(), job()] == ["result", "result"]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "hud_otel"]
        assert len(errors) == 1
        assert errors[0].exc_info[1].args == ("hud_otel bug",)
        assert flows.spans() == []


def test_an_internal_error_is_reraised_under_the_projects_own_test_suite(monkeypatch):
    """Under HUD_OTEL_RAISE_INTERNAL=1 (set by our conftest) the guard re-raises, so bugs cannot hide."""

    def broken(*args, **kwargs):
        raise RuntimeError("hud_otel bug")

    with capture_flows():
        monkeypatch.setattr(_invocation, "_start", broken)
        with pytest.raises(RuntimeError, match="hud_otel bug"), hud_sdk.sync_flow("job"):
            pass


def test_queue_flow_with_a_negative_end_to_end_time_records_none_and_counts_clock_skew():
    """enqueued_at in the future (clock skew): no e2e attribute or metric, skipped{clock_skew} counted."""
    with capture_flows() as flows:
        future = datetime.now(timezone.utc) + timedelta(hours=1)
        with hud_sdk.sync_flow("orders", flow_type="queue", enqueued_at=future):
            pass
        (span,) = flows.spans()
        assert "hud.queue.e2e_duration_ms" not in span.attributes
        assert span.attributes["hud.queue.enqueued_at"] == future.isoformat().replace("+00:00", "Z")
        assert flows.skipped() == {"clock_skew": 1}
        assert points(flows, "hud.flow.e2e_duration") == {}
