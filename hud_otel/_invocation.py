"""One flow call from start to end: the rules of CONTRACT section 2 and the span of section 3.

Per-call state lives in the ``_FRAME`` context variable, never on the flow object, so one decorated
function or flow object used by many threads or tasks at once tracks every call on its own. Every entry
into a flow pushes a frame (a skipped one too, so that the matching exit pops it and not its parent).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar, Token
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from . import _attributes as A
from ._guard import internal_guard, warn_once
from ._processor import FLOW_ROOT_CONTEXT, Entry, attach_entry, entry_of
from ._state import STATE, Runtime

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FLOW_TYPES = {"custom": "custom", "queue": "queue"}
# error name -> metric attributes is cached per definition, up to this many distinct errors.
_MAX_CACHED_ERRORS = 64
_INT64_MAX = 2**63 - 1


class Definition:
    """What is fixed for every call of one flow: its key, span name, kind and attribute sets."""

    __slots__ = (
        "_failure_attrs",
        "attrs",
        "base_metric_attrs",
        "is_queue",
        "key",
        "kind",
        "metric_cancelled",
        "metric_success",
        "name",
        "span_name",
    )

    def __init__(
        self, name: str, flow_type: str, framework: str, code_attrs: Optional[dict[str, str]]
    ) -> None:
        # A str subclass (a str-mixin enum member, say) becomes a plain str: it is what lands on the
        # wire, and its own __str__/__format__ would otherwise name the span.
        name, framework = str.__str__(name), str.__str__(framework)
        self.key = (flow_type, framework, name)
        self.name = name
        self.is_queue = flow_type == "queue"
        self.span_name = f"process {name}" if self.is_queue else name
        self.kind = SpanKind.CONSUMER if self.is_queue else SpanKind.INTERNAL
        attrs: dict[str, Any] = {A.FLOW_NAME: name, A.FLOW_TYPE: flow_type, A.FRAMEWORK: framework}
        if code_attrs:
            attrs.update(code_attrs)
        if self.is_queue:
            attrs[A.MESSAGING_SYSTEM] = A.MESSAGING_SYSTEMS.get(framework.lower(), framework)
            attrs[A.MESSAGING_OPERATION_TYPE] = A.OPERATION_PROCESS
            attrs[A.MESSAGING_OPERATION_NAME] = A.OPERATION_PROCESS
            attrs[A.MESSAGING_DESTINATION_NAME] = name
        # Most flows succeed: the span starts with that outcome, and finish() only writes another one.
        attrs[A.FLOW_OUTCOME] = A.OUTCOME_SUCCESS
        self.attrs = attrs
        base = {A.FLOW_NAME: name, A.FLOW_TYPE: flow_type, A.FRAMEWORK: framework}
        self.base_metric_attrs = base
        self.metric_success = {**base, A.FLOW_OUTCOME: A.OUTCOME_SUCCESS}
        self.metric_cancelled = {**base, A.FLOW_OUTCOME: A.OUTCOME_CANCELLED}
        self._failure_attrs: dict[str, dict[str, str]] = {}

    def failure_metric_attrs(self, error: str) -> dict[str, str]:
        attrs = self._failure_attrs.get(error)
        if attrs is None:
            attrs = {
                **self.base_metric_attrs,
                A.FLOW_OUTCOME: A.OUTCOME_FAILURE,
                A.ERROR_TYPE: error,
            }
            if len(self._failure_attrs) < _MAX_CACHED_ERRORS:
                self._failure_attrs[error] = attrs
        return attrs


class Invocation(Entry):
    """A flow that was started: its span and what the user told us about it so far."""

    __slots__ = ("definition", "e2e_start_ns", "error", "message_count", "reason", "start_ns")

    def __init__(self, span: Any, definition: Definition, start_ns: int) -> None:
        super().__init__(span, definition.name, True)
        self.definition = definition
        self.start_ns = start_ns
        self.e2e_start_ns: Optional[int] = None
        self.message_count: Optional[int] = None
        self.error: Optional[str] = None
        self.reason: Optional[str] = None

    def set_failure(self, error: str, reason: Optional[str], attributes: dict[str, Any]) -> None:
        if attributes:
            self.set_context(attributes)
        self.error = error
        self.reason = reason


class Frame:
    """One entry into a flow in one context; skipped entries get a frame too."""

    __slots__ = ("invocation", "otel_token", "owner", "parent", "target", "token")

    def __init__(
        self,
        owner: object,
        target: Optional[Entry],
        invocation: Optional[Invocation],
        parent: Optional[Frame],
    ) -> None:
        self.owner = owner
        self.target = target  # where set_context / set_failure go while this frame is on top
        self.invocation = invocation  # the flow this frame started, None when skipped
        self.parent = parent
        self.token: Optional[Token[Optional[Frame]]] = None
        self.otel_token: Optional[Token[Any]] = None


_FRAME: ContextVar[Optional[Frame]] = ContextVar("hud_otel_frame", default=None)


def current_target() -> Optional[Entry]:
    """Where ``set_context``/``set_failure`` act now: the active flow, else an open request."""
    frame = _FRAME.get()
    if frame is not None and frame.target is not None and not frame.target.ended:
        return frame.target
    entry = entry_of(trace.get_current_span())
    if entry is not None and not entry.ended:
        return entry
    return None


# -- validation ----------------------------------------------------------------------------------


def valid_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= A.MAX_NAME_LENGTH and not name.isspace()


def warn_invalid_name(name: object) -> None:
    try:
        key: object = ("invalid_name", name if isinstance(name, str) else repr(name)[:300])
        hash(key)
    except Exception:
        key = ("invalid_name", type(name).__name__)
    warn_once(
        key,
        "hud_otel: flow name %s is not a non-blank string of at most %d characters; "
        "the flow is skipped (the code still runs)",
        _short_repr(name),
        A.MAX_NAME_LENGTH,
    )


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def normalize_flow_type(flow_type: object) -> str:
    value = _FLOW_TYPES.get(flow_type) if isinstance(flow_type, str) else None
    if value is None:
        warn_once(
            ("flow_type", _short_repr(flow_type)),
            "hud_otel: flow_type %s is not FlowType.CUSTOM or FlowType.QUEUE; using CUSTOM",
            _short_repr(flow_type),
        )
        return "custom"
    return value


def normalize_framework(framework: object) -> str:
    if isinstance(framework, str) and framework.strip() and len(framework) <= A.MAX_NAME_LENGTH:
        return str.__str__(framework)
    warn_once(
        ("framework", _short_repr(framework)),
        "hud_otel: framework %s is not a non-blank string of at most %d characters; using 'custom'",
        _short_repr(framework),
        A.MAX_NAME_LENGTH,
    )
    return "custom"


def queue_arguments(
    name: str, is_queue: bool, enqueued_at: object, message_count: object
) -> tuple[Optional[int], Optional[str], Optional[int]]:
    """Validate the per-call queue arguments: (enqueued ns since epoch, RFC 3339 UTC, count)."""
    enqueued_ns: Optional[int] = None
    enqueued_iso: Optional[str] = None
    count: Optional[int] = None
    if enqueued_at is not None:
        if not is_queue:
            warn_once(
                ("enqueued_at_custom", name),
                "hud_otel: enqueued_at is for queue flows only; ignored on custom flow %r",
                name,
            )
        elif not isinstance(enqueued_at, datetime) or enqueued_at.utcoffset() is None:
            warn_once(
                ("enqueued_at_invalid", name),
                "hud_otel: enqueued_at of flow %r must be a timezone-aware datetime; ignored",
                name,
            )
        else:
            try:
                utc = enqueued_at.astimezone(timezone.utc)
                enqueued_ns = (utc - _EPOCH) // timedelta(microseconds=1) * 1000
                enqueued_iso = utc.isoformat().replace("+00:00", "Z")
            except (OverflowError, ValueError):
                warn_once(
                    ("enqueued_at_range", name),
                    "hud_otel: enqueued_at of flow %r is out of range; ignored",
                    name,
                )
    if message_count is not None:
        if not is_queue:
            warn_once(
                ("message_count_custom", name),
                "hud_otel: message_count is for queue flows only; ignored on custom flow %r",
                name,
            )
        elif type(message_count) is not int and not (
            isinstance(message_count, int) and not isinstance(message_count, bool)
        ):
            warn_once(
                ("message_count_invalid", name),
                "hud_otel: message_count of flow %r must be an int (not a bool); ignored",
                name,
            )
        elif message_count < 0:
            warn_once(
                ("message_count_negative", name),
                "hud_otel: message_count of flow %r is negative; ignored",
                name,
            )
        elif message_count > _INT64_MAX:
            # OTLP carries int64: a bigger count would fail the metric and the whole span batch.
            warn_once(
                ("message_count_range", name),
                "hud_otel: message_count of flow %r does not fit in 64 bits; ignored",
                name,
            )
        else:
            count = int(message_count)
    return enqueued_ns, enqueued_iso, count


def definition_for(rt: Runtime, name: object, flow_type: object, framework: object) -> Optional[Definition]:
    """The shared definition of a flow without code attributes, or None (skip counted) if none."""
    if not valid_name(name):
        warn_invalid_name(name)
        rt.count_skip(A.REASON_INVALID_NAME)
        return None
    assert isinstance(name, str)
    name = str.__str__(name)  # a str subclass may be unhashable or format itself oddly
    # Cached under the raw arguments (FlowType.QUEUE and "queue" are two cache keys for one flow).
    key = (flow_type, framework, name)
    try:
        definition = rt.definitions.get(key)  # type: ignore[arg-type]
    except TypeError:  # unhashable flow_type or framework
        definition = None
    if definition is not None:
        return definition
    ftype_s = normalize_flow_type(flow_type)
    framework_s = normalize_framework(framework)
    if not rt.admit((ftype_s, framework_s, name)):
        rt.count_skip(A.REASON_NAME_CAP)
        return None
    definition = Definition(name, ftype_s, framework_s, None)
    if len(rt.definitions) < 2 * rt.max_flow_names:
        try:
            rt.definitions[key] = definition  # type: ignore[index]
        except TypeError:
            pass
    return definition


# -- start and end -------------------------------------------------------------------------------


def push(frame: Frame, current: Optional[Context] = None) -> None:
    """Activate ``frame`` in this context; ``current`` is the OpenTelemetry context, when already known."""
    frame.token = _FRAME.set(frame)
    inv = frame.invocation
    if inv is not None:
        if current is None:
            current = otel_context.get_current()
        frame.otel_token = otel_context.attach(trace.set_span_in_context(inv.span, current))


def pop(frame: Frame, exc: Optional[BaseException] = None) -> None:
    """Deactivate ``frame`` in this context (tolerant of being called from another context).

    Frames still open above ``frame`` (a ``start_flow`` inside the block without its ``end_flow``) go
    first, innermost first, so that both context variables return to what they were before ``frame``;
    a flow such a frame started ends here, with ``exc``, as the block that contained it does, instead
    of staying open and active forever.
    """
    if _FRAME.get() is not frame:  # the common case, a frame on top, needs no walk
        for above in _frames_above(frame):
            _pop_one(above)
            inv = above.invocation
            if inv is not None and not inv.ended:
                finish(inv, exc)
    _pop_one(frame)


def _pop_one(frame: Frame) -> None:
    otel_token = frame.otel_token
    if otel_token is not None:
        frame.otel_token = None
        try:
            otel_context._RUNTIME_CONTEXT.detach(otel_token)
        except Exception:
            # Entered in another context (an async generator stepped by another task): the token
            # cannot be reset here, and this context never held the flow anyway.
            pass
    token = frame.token
    if token is not None:
        frame.token = None
        try:
            _FRAME.reset(token)
        except ValueError:
            _FRAME.set(frame.parent)


class FlowSource(Protocol):
    """What a flow entry is started from: resolves (and caches) its definition for a runtime."""

    def resolve(self, rt: Runtime) -> Optional[Definition]:
        """The definition, or None after counting why the flow is skipped."""


def enter(
    rt: Runtime,
    owner: object,
    source: FlowSource,
    enqueued_at: object = None,
    message_count: object = None,
    activate: bool = True,
) -> Optional[Frame]:
    """Start a flow (or record why it is skipped) and push its frame; never raises."""
    try:
        parent = _FRAME.get()
        if parent is not None:
            target = parent.target
            if target is not None and not target.ended:
                return _skipped(rt, owner, target, parent, activate)
        definition = source.resolve(rt)
        if definition is None:  # the reason is counted by resolve()
            return _skipped(None, owner, None, parent, activate)
        context = otel_context.get_current()
        current = trace.get_current_span(context)
        entry = entry_of(current)
        if entry is not None and not entry.ended:
            return _skipped(rt, owner, entry, parent, activate)
        return _start(
            rt, owner, definition, parent, context, current, entry, enqueued_at, message_count, activate
        )
    except Exception as exc:
        with internal_guard:
            raise exc
        return None


def _skipped(
    rt: Optional[Runtime], owner: object, target: Optional[Entry], parent: Optional[Frame], activate: bool
) -> Frame:
    """The frame of a skipped entry: helpers inside it act on ``target``; counted when ``rt`` is given."""
    if rt is not None and target is not None:
        rt.count_skip(A.REASON_NESTED if target.is_flow else A.REASON_IN_REQUEST)
    frame = Frame(owner, target, None, parent)
    if activate:
        push(frame)
    return frame


def _start(
    rt: Runtime,
    owner: object,
    definition: Definition,
    parent: Optional[Frame],
    context: Context,
    current: Any,
    entry: Optional[Entry],
    enqueued_at: object,
    message_count: object,
    activate: bool,
) -> Frame:
    links: Optional[list[Link]] = None
    current_ctx = current.get_span_context()
    if current_ctx.is_valid:
        links = [Link(current_ctx)]
    ended = parent.target if parent is not None and parent.target is not None else entry
    if ended is not None:
        # A task or thread that outlived the flow or request it was started in: link to that flow or
        # request itself, even when the span current here is one of its children.
        ended_ctx = ended.span.get_span_context()
        if ended_ctx.is_valid and ended_ctx != current_ctx:
            links = [*(links or ()), Link(ended_ctx)]
    attrs = definition.attrs
    e2e_start_ns = None
    count = None
    if enqueued_at is not None or message_count is not None:
        e2e_start_ns, enqueued_iso, count = queue_arguments(
            definition.name, definition.is_queue, enqueued_at, message_count
        )
        if enqueued_iso is not None or count is not None:
            attrs = dict(attrs)
            if enqueued_iso is not None:
                attrs[A.QUEUE_ENQUEUED_AT] = enqueued_iso
            if count is not None:
                attrs[A.QUEUE_MESSAGE_COUNT] = count
                if count >= 2:
                    attrs[A.MESSAGING_BATCH_MESSAGE_COUNT] = count
    start_ns = time.time_ns()
    span = rt.tracer.start_span(
        definition.span_name,
        context=FLOW_ROOT_CONTEXT,
        kind=definition.kind,
        attributes=attrs,
        links=links,
        start_time=start_ns,
        record_exception=False,
        set_status_on_exception=False,
    )
    inv = Invocation(span, definition, start_ns)
    inv.e2e_start_ns = e2e_start_ns
    inv.message_count = count
    attach_entry(span, inv)
    frame = Frame(owner, inv, inv, parent)
    if activate:
        push(frame, context)
    return frame


def leave(frame: Optional[Frame], exc: Optional[BaseException], reason: object = None) -> None:
    """Pop ``frame`` (and any left open above it) and, if it started a flow, end it; never raises."""
    if frame is None:
        return
    try:
        pop(frame, exc)
        inv = frame.invocation
        if inv is not None and not inv.ended:
            finish(inv, exc, reason)
    except Exception as internal:
        with internal_guard:
            raise internal


def _frames_above(frame: Frame) -> list[Frame]:
    """The frames pushed on top of ``frame`` in this context, innermost first (none if it is not here)."""
    above: list[Frame] = []
    current = _FRAME.get()
    while current is not None and current is not frame:
        above.append(current)
        current = current.parent
    return above if current is frame else []


def innermost_frame_of(owner: object) -> Optional[Frame]:
    """The innermost frame ``owner`` pushed in this context, even under frames left open above it."""
    frame = _FRAME.get()
    while frame is not None and frame.owner is not owner:
        frame = frame.parent
    return frame


def finish(inv: Invocation, exc: Optional[BaseException], end_reason: object = None) -> None:
    """End the flow's span and record its metrics."""
    end_ns = time.time_ns()
    inv.ended = True
    definition = inv.definition
    span = inv.span
    outcome = A.OUTCOME_SUCCESS
    error: Optional[str] = None
    description: Optional[str] = None
    record = False
    if exc is not None:
        if isinstance(exc, asyncio.CancelledError):
            outcome = A.OUTCOME_CANCELLED
        elif isinstance(exc, SystemExit):
            if exc.code not in (0, None):
                outcome, error = A.OUTCOME_FAILURE, "SystemExit"
                description = f"SystemExit: {exc.code}"
        elif not isinstance(exc, GeneratorExit):
            outcome, error, record = A.OUTCOME_FAILURE, type(exc).__name__, True
            description = f"{error}: {exc}" if str(exc) else error
    if end_reason is not None and end_reason != "":
        reason_s = str.__str__(end_reason) if isinstance(end_reason, str) else _safe_str(end_reason)
        outcome, error, description = A.OUTCOME_FAILURE, reason_s, reason_s
    if inv.error is not None:
        outcome, error = A.OUTCOME_FAILURE, inv.error
        description = inv.reason if inv.reason is not None else description or inv.error
    # The span started with outcome "success" (Definition.attrs): a successful flow writes nothing here.
    end_attrs: dict[str, Any] = {} if outcome == A.OUTCOME_SUCCESS else {A.FLOW_OUTCOME: outcome}
    if error is not None:
        end_attrs[A.ERROR_TYPE] = error
        end_attrs[A.FLOW_ERROR] = error
    e2e_s = None
    if inv.e2e_start_ns is not None:
        e2e_ns = end_ns - inv.e2e_start_ns
        if e2e_ns < 0:
            _count_skip(A.REASON_CLOCK_SKEW)
        else:
            e2e_s = e2e_ns / 1e9
            end_attrs[A.QUEUE_E2E_DURATION_MS] = e2e_ns / 1e6
    if end_attrs:
        span.set_attributes(end_attrs)
    if record:
        span.record_exception(exc, escaped=True)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, description))
    span.end(end_ns)
    rt = STATE.runtime
    if rt is None:
        return
    instruments = rt.instruments
    if outcome == A.OUTCOME_SUCCESS:
        metric_attrs = definition.metric_success
    elif error is not None:
        metric_attrs = definition.failure_metric_attrs(error)
    else:
        metric_attrs = definition.metric_cancelled
    instruments.duration.record((end_ns - inv.start_ns) / 1e9, metric_attrs)
    if e2e_s is not None:
        instruments.e2e_duration.record(e2e_s, definition.base_metric_attrs)
    if inv.message_count is not None:
        instruments.messages.add(inv.message_count, definition.base_metric_attrs)


def _count_skip(reason: str) -> None:
    rt = STATE.runtime
    if rt is not None:
        rt.count_skip(reason)


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"
