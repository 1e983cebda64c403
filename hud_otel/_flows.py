"""The public flow objects: ``sync_flow``, ``async_flow``, ``start_flow``/``end_flow``, ``set_context``,
``set_failure`` and ``FlowType``."""

from __future__ import annotations

import enum
from datetime import datetime
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar, Union, overload

from typing_extensions import ParamSpec

from . import _attributes as A
from ._guard import internal_guard, warn_once, warn_user_once
from ._invocation import (
    _FRAME,
    Definition,
    Invocation,
    _short_repr,
    current_target,
    definition_for,
    enter,
    innermost_frame_of,
    leave,
)
from ._state import STATE, Runtime, warn_unregistered
from ._wrapping import DecoratedFlow, wrap

_P = ParamSpec("_P")
_R = TypeVar("_R")


class FlowType(str, enum.Enum):
    """The two kinds of manual flow. The plain strings ``"custom"`` and ``"queue"`` work too.

    >>> FlowType.QUEUE == "queue"
    True
    """

    CUSTOM = "custom"
    """Scripts, cron jobs, scheduled tasks, background loops: the Custom Flows page."""
    QUEUE = "queue"
    """Custom or in-house queue consumers: the Queues page."""

    def __str__(self) -> str:
        return str(self.value)


class _FlowSpec:
    """What ``sync_flow``/``async_flow`` were given; per-call state is never kept here."""

    __slots__ = ("enqueued_at", "flow_type", "framework", "message_count", "name")

    def __init__(
        self,
        name: str,
        flow_type: Union[FlowType, str],
        framework: str,
        enqueued_at: Optional[datetime],
        message_count: Optional[int],
    ) -> None:
        self.name = name
        self.flow_type = flow_type
        self.framework = framework
        self.enqueued_at = enqueued_at
        self.message_count = message_count

    def resolve(self, rt: Runtime) -> Optional[Definition]:
        return definition_for(rt, self.name, self.flow_type, self.framework)

    def _decorate(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        if self.enqueued_at is not None or self.message_count is not None:
            shown = _short_repr(self.name)  # any name: unhashable, hostile repr, a megabyte long
            warn_user_once(
                ("decorator_queue_args", shown),
                f"hud_otel: enqueued_at and message_count are per message; they are ignored on the "
                f"decorator of flow {shown} (use the context manager or start_flow)",
                stacklevel=3,
            )
        if not callable(fn) and not isinstance(fn, (classmethod, staticmethod)):
            warn_once(
                ("decorate_non_callable", type(fn).__name__),
                "hud_otel: a flow decorator was applied to a non-callable %s; left as it is",
                type(fn).__name__,
            )
            return fn
        return wrap(fn, DecoratedFlow(self.name, self.flow_type, self.framework, fn))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, flow_type={str(self.flow_type)!r}, "
            f"framework={self.framework!r})"
        )


class SyncFlow(_FlowSpec):
    """A flow as a decorator or a ``with`` block; made by :func:`sync_flow`."""

    __slots__ = ()

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        return self._decorate(fn)

    def __enter__(self) -> None:
        rt = STATE.runtime
        if rt is None:
            if not STATE.warned_unregistered:
                warn_unregistered()
            return
        enter(rt, self, self, self.enqueued_at, self.message_count)

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        leave(innermost_frame_of(self), exc)


class AsyncFlow(_FlowSpec):
    """A flow as a decorator for ``async def`` or an ``async with`` block; made by :func:`async_flow`."""

    __slots__ = ()

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        return self._decorate(fn)

    async def __aenter__(self) -> None:
        rt = STATE.runtime
        if rt is None:
            if not STATE.warned_unregistered:
                warn_unregistered()
            return
        enter(rt, self, self, self.enqueued_at, self.message_count)

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        leave(innermost_frame_of(self), exc)


@overload
def sync_flow(
    name: str,
    *,
    flow_type: Union[FlowType, str] = ...,
    framework: str = ...,
    enqueued_at: Optional[datetime] = ...,
    message_count: Optional[int] = ...,
) -> SyncFlow: ...
@overload
def sync_flow(name: Callable[_P, _R]) -> Callable[_P, _R]: ...
def sync_flow(
    name: Any,
    *,
    flow_type: Union[FlowType, str] = FlowType.CUSTOM,
    framework: str = "custom",
    enqueued_at: Optional[datetime] = None,
    message_count: Optional[int] = None,
) -> Any:
    """Mark a function (decorator) or a block (``with``) as a flow.

    Every call of the decorated function, or every pass through the block, is tracked as one flow::

        @hud_otel.sync_flow("nightly-report")
        def generate_nightly_report(date): ...

        with hud_otel.sync_flow("orders", flow_type=hud_otel.FlowType.QUEUE, framework="sqs",
                                enqueued_at=message.enqueued_at, message_count=1):
            process_order(message.payload)

    An exception escaping the function or block marks the flow failed (error = the exception class
    name) and is re-raised unchanged. ``enqueued_at`` and ``message_count`` are per message: they are
    honoured by the ``with`` form and ignored, with a warning, on the decorator.
    """
    if callable(name) and not isinstance(name, str):
        return _bare_decorator(SyncFlow, name)
    return SyncFlow(name, flow_type, framework, enqueued_at, message_count)


@overload
def async_flow(
    name: str,
    *,
    flow_type: Union[FlowType, str] = ...,
    framework: str = ...,
    enqueued_at: Optional[datetime] = ...,
    message_count: Optional[int] = ...,
) -> AsyncFlow: ...
@overload
def async_flow(name: Callable[_P, _R]) -> Callable[_P, _R]: ...
def async_flow(
    name: Any,
    *,
    flow_type: Union[FlowType, str] = FlowType.CUSTOM,
    framework: str = "custom",
    enqueued_at: Optional[datetime] = None,
    message_count: Optional[int] = None,
) -> Any:
    """Mark an ``async def`` function (decorator) or an ``async with`` block as a flow.

    The same arguments and rules as :func:`sync_flow`::

        @hud_otel.async_flow("orders", flow_type=hud_otel.FlowType.QUEUE, framework="sqs")
        async def handle_order(message): ...

        async with hud_otel.async_flow("cleanup-expired-sessions"):
            await delete_expired_sessions()

    A cancelled flow (``asyncio.CancelledError``) has outcome ``cancelled`` and is not a failure.
    """
    if callable(name) and not isinstance(name, str):
        return _bare_decorator(AsyncFlow, name)
    return AsyncFlow(name, flow_type, framework, enqueued_at, message_count)


def _bare_decorator(cls: type[_FlowSpec], fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``@sync_flow`` without a name: keep the program working, name the flow after the function."""
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    name = str(qualname)[: A.MAX_NAME_LENGTH]
    warn_user_once(
        ("bare_decorator", name),
        f"hud_otel: {cls.__name__.lower().replace('flow', '_flow')} used without a name on "
        f"{name!r}; the flow is named {name!r} (pass a stable name: @sync_flow('my-flow'))",
        stacklevel=3,
    )
    return cls(name, FlowType.CUSTOM, "custom", None, None)._decorate(fn)


class _ManualFlow:
    """The source of one ``start_flow`` call."""

    __slots__ = ("flow_type", "framework", "name")

    def __init__(self, name: object, flow_type: object, framework: object) -> None:
        self.name = name
        self.flow_type = flow_type
        self.framework = framework

    def resolve(self, rt: Runtime) -> Optional[Definition]:
        return definition_for(rt, self.name, self.flow_type, self.framework)


# The owner of frames pushed by start_flow: end_flow only ever pops one of these.
_MANUAL = object()


def start_flow(
    name: str,
    *,
    flow_type: Union[FlowType, str] = FlowType.CUSTOM,
    framework: str = "custom",
    enqueued_at: Optional[datetime] = None,
    message_count: Optional[int] = None,
) -> None:
    """Start a flow that lasts until the matching :func:`end_flow` in the same context.

    Prefer the decorator or ``with`` form: this pair does not record exceptions by itself::

        hud_otel.start_flow("cleanup-expired-sessions")
        try:
            delete_expired_sessions()
        except Exception:
            hud_otel.set_failure("CleanupFailed")
            raise
        finally:
            hud_otel.end_flow()
    """
    rt = STATE.runtime
    if rt is None:
        if not STATE.warned_unregistered:
            warn_unregistered()
        return
    enter(rt, _MANUAL, _ManualFlow(name, flow_type, framework), enqueued_at, message_count)


def end_flow(failure_reason: Optional[str] = None) -> None:
    """End the flow the last :func:`start_flow` of this context started.

    A ``failure_reason`` (anything but ``None`` or ``""``) marks the flow failed with that reason::

        hud_otel.end_flow("UpstreamTimeout")
    """
    rt = STATE.runtime
    if rt is None:
        if not STATE.warned_unregistered:
            warn_unregistered()
        return
    frame = _FRAME.get()
    if frame is None or frame.owner is not _MANUAL:
        warn_once(
            "end_flow_unmatched",
            "hud_otel: end_flow() without an open start_flow() in this context; skipped",
        )
        return
    if frame.invocation is None and frame.target is not None and failure_reason not in (None, ""):
        # A skipped (nested) start_flow: its failure belongs to the flow that is used instead.
        _fail_target(frame.target, failure_reason, None, {})
    leave(frame, None, failure_reason)


def set_context(**values: Any) -> None:
    """Attach data to the current flow: each ``key=value`` becomes the span attribute
    ``hud.context.<key>``; a later call wins key by key::

        hud_otel.set_context(order_id=order.id, tenant="acme")
    """
    rt = STATE.runtime
    if rt is None:
        if not STATE.warned_unregistered:
            warn_unregistered()
        return
    with internal_guard:
        target = current_target()
        if target is None:
            warn_once("set_context_outside", "hud_otel: set_context() outside any flow; ignored")
            return
        attributes = context_attributes(_within_caps(target, values))
        if attributes:
            target.set_context(attributes)


def set_failure(error: str, **values: Any) -> None:
    """Mark the current flow failed even if no exception escapes it.

    ``error`` is the error name (it wins over an exception's class name); ``reason=`` becomes the
    span's status description; every value also goes to the flow's context::

        hud_otel.set_failure("BatchRejected", reason="3 invalid rows")
    """
    rt = STATE.runtime
    if rt is None:
        if not STATE.warned_unregistered:
            warn_unregistered()
        return
    with internal_guard:
        target = current_target()
        if target is None:
            warn_once("set_failure_outside", "hud_otel: set_failure() outside any flow; ignored")
            return
        _fail_target(target, error, values.get("reason"), values)


def _fail_target(target: Any, error: object, reason: object, values: dict[str, Any]) -> None:
    if not isinstance(error, str) or not error.strip():
        warn_once(
            ("failure_name", type(error).__name__),
            "hud_otel: a failure name should be a non-blank string, got %s",
            type(error).__name__,
        )
        error = _text(error) if error is not None and _text(error).strip() else "Failure"
    error = (str.__str__(error) if isinstance(error, str) else str(error))[: A.MAX_NAME_LENGTH]
    reason_s = None if reason is None else _text(reason)[: A.MAX_CONTEXT_VALUE_LENGTH]
    target.set_failure(error, reason_s, context_attributes(_within_caps(target, values)))


def _within_caps(target: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The values a flow can still take, so that a call with thousands of keys costs what the key cap
    allows and not what the caller sent. One key over the cap is kept for the flow to drop and warn."""
    if len(values) <= A.MAX_CONTEXT_KEYS or not isinstance(target, Invocation):
        return values
    known = target.ctx_keys or set()
    room = A.MAX_CONTEXT_KEYS - len(known) + 1
    out: dict[str, Any] = {}
    for key, value in values.items():
        attr = A.CONTEXT_PREFIX + key[:_MAX_KEY_LENGTH]
        if value is None or attr in known:
            out[key] = value
        elif room > 0:
            out[key] = value
            room -= 1
    return out


_SCALARS = (str, bool, int, float)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_KEY_LENGTH = 128


def context_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """``set_context`` values as span attributes (CONTRACT section 3, "context")."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[A.CONTEXT_PREFIX + key[:_MAX_KEY_LENGTH]] = _attribute_value(value)
    return out


def _attribute_value(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value[: A.MAX_CONTEXT_VALUE_LENGTH]
    if kind is bool or kind is float:
        return value
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)[: A.MAX_CONTEXT_VALUE_LENGTH]
    if kind in (list, tuple) and value:
        first = type(value[0])
        if first in _SCALARS and all(type(item) is first for item in value):
            if first is str:
                return [item[: A.MAX_CONTEXT_VALUE_LENGTH] for item in value[: A.MAX_CONTEXT_KEYS]]
            if first is int and not all(_INT64_MIN <= item <= _INT64_MAX for item in value):
                return _text(value, repr)[: A.MAX_CONTEXT_VALUE_LENGTH]
            return list(value)
    return _text(value, repr)[: A.MAX_CONTEXT_VALUE_LENGTH]


def _text(value: object, conv: Callable[[object], str] = str) -> str:
    try:
        text = conv(value)
        return text if isinstance(text, str) else f"<{type(value).__name__}>"
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
