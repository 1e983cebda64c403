"""The span processor: which spans are flows or requests, and which spans run inside one.

Every span any instrumentation starts passes through ``on_start``. A span inherits its parent's *entry*
(the flow or request it runs inside), so "inside a request" holds even with INTERNAL spans between the
request and the flow. The flow API asks :func:`entry_of` the same question before it starts a span.

Spans another tracer marks as flows (``hud.flow_type`` among the attributes given at start) obey the
same rules here: one that is nested, inside a request, badly named or over the name cap is demoted to an
ordinary span (``hud.flow.skipped_reason`` recorded, ``hud.flow_type`` removed) and counted in
``hud.flow.skipped``; one that obeys them is a flow whose metrics this processor records when it ends.
hud_otel's own flows are started with :data:`FLOW_ROOT_CONTEXT`, have already been judged by the flow API
and record their own metrics, so the processor leaves them alone.

An entry ends when its span ends, not when the code that started it returns. Work handed the request's
context (``asyncio.create_task``, a thread run in a copied context, Starlette/FastAPI background tasks)
is inside the request while the request span is open and outside once it has ended. The ASGI
instrumentation ends the SERVER span when the last body chunk is sent, before Starlette runs the
response's background tasks, so a flow in a background task is a new root flow linked to the request.

What the processor cannot see: spans a sampler dropped never reach any processor, so a request that was
sampled out does not hold flows back, and a raw-API flow that was sampled out records no metrics. A span
is judged as a flow by the attributes it is started with; ``hud.flow_type`` set later is not checked.
"""

from __future__ import annotations

from typing import Any, Optional

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _attributes as A
from ._guard import internal_guard, warn_once
from ._state import STATE

# The parent context hud_otel's own flows are started with: the processor recognises it by identity and
# leaves the span alone (the flow API has already applied the rules to it).
FLOW_ROOT_CONTEXT = Context()

# Where a span's entry is kept on the span object itself, so it lives and dies with the span.
_ENTRY_ATTR = "_hud_otel_entry"
_SERVER = SpanKind.SERVER
_CONSUMER = SpanKind.CONSUMER
_FLOW_TYPE = A.FLOW_TYPE
_FLOW_NAME = A.FLOW_NAME
_FLOW_TYPES = ("custom", "queue")
_OUTCOMES = (A.OUTCOME_SUCCESS, A.OUTCOME_FAILURE, A.OUTCOME_CANCELLED)
# error.type when a failed raw-API flow names no error (the semantic conventions' catch-all value).
_OTHER_ERROR = "_OTHER"
# SDKs since 1.3x tell processors, with the span object itself, that a span is ending; older ones only
# hand a read-only copy to on_end, so open entries are then found again by span id.
_HAS_ON_ENDING = hasattr(SpanProcessor, "_on_ending")

# The context key under which OpenTelemetry keeps the current span, found through the public API. Reading
# it straight from the context costs a third of trace.get_current_span(), on a path every span takes.
(_span_key,) = trace.set_span_in_context(trace.INVALID_SPAN, Context()).keys()
_get_current = otel_context.get_current


def _parent_span(parent_context: Optional[Context]) -> Any:
    """The span ``parent_context`` (or, if None, the current context) holds, or None."""
    return (parent_context if parent_context is not None else _get_current()).get(_span_key)


class Entry:
    """A flow or a request (a SERVER or CONSUMER span) that other spans may run inside."""

    __slots__ = ("ctx_keys", "ended", "is_flow", "name", "span")

    def __init__(self, span: Any, name: Optional[str], is_flow: bool) -> None:
        self.span = span
        self.name = name
        self.is_flow = is_flow
        self.ended = False
        self.ctx_keys: Optional[set[str]] = None

    def set_context(self, attributes: dict[str, Any]) -> None:
        """Write ``hud.context.*`` attributes onto the entry's span, at most 64 distinct keys."""
        keys = self.ctx_keys
        if keys is None:
            keys = self.ctx_keys = set()
        for key in list(attributes):
            if key not in keys:
                if len(keys) >= A.MAX_CONTEXT_KEYS:
                    del attributes[key]
                    warn_once(
                        ("context_keys", self.name),
                        "hud_otel: flow %r has more than %d set_context keys; the rest are dropped",
                        self.name if self.name is not None else getattr(self.span, "name", "?"),
                        A.MAX_CONTEXT_KEYS,
                    )
                    continue
                keys.add(key)
        if attributes:
            self.span.set_attributes(attributes)

    def set_failure(self, error: str, reason: Optional[str], attributes: dict[str, Any]) -> None:
        """Mark the entry's span failed now (a request span is Hud's flow for that request)."""
        span = self.span
        if attributes:
            self.set_context(attributes)
        span.set_attribute(A.FLOW_ERROR, error)
        span.set_attribute(A.ERROR_TYPE, error)
        span.set_status(Status(StatusCode.ERROR, reason or error))


class RawFlow(Entry):
    """A span another tracer marked as a flow, admitted by the rules; its metrics are recorded at its end."""

    __slots__ = ("base_metric_attrs",)

    def __init__(self, span: Any, name: str, flow_type: str, framework: str) -> None:
        super().__init__(span, name, True)
        self.base_metric_attrs = {A.FLOW_NAME: name, A.FLOW_TYPE: flow_type, A.FRAMEWORK: framework}


def entry_of(span: Any) -> Optional[Entry]:
    """The flow or request ``span`` runs inside, if any (ended ones included)."""
    return getattr(span, _ENTRY_ATTR, None)


def attach_entry(span: Any, entry: Entry) -> None:
    """Mark ``span`` as running inside ``entry``; silently impossible on non-recording spans."""
    try:
        setattr(span, _ENTRY_ATTR, entry)
    except AttributeError:
        pass


class HudSpanProcessor(SpanProcessor):
    """Tracks flows and requests per context and stamps ``hud.flow.name`` on spans inside a flow.

    ``register()`` installs it on the tracer provider; it can also be added by hand::

        provider.add_span_processor(hud_otel.HudSpanProcessor())

    Like every span processor it never raises and never blocks: its own failures are logged once.
    """

    def __init__(self) -> None:
        # span_id -> entry owned by an open span, kept only on SDKs without the ``_on_ending`` hook.
        self._open: dict[int, Entry] = {}

    # -- start -------------------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        if parent_context is FLOW_ROOT_CONTEXT:
            return
        # The hot path, run for every span: a plain try costs nothing until something fails.
        try:
            sp: Any = span
            try:
                flagged = _FLOW_TYPE in sp._attributes._dict
            except AttributeError:  # pragma: no cover - an SDK whose attribute mapping differs
                flagged = _FLOW_TYPE in (span.attributes or ())
            if flagged:
                self._flow_start(sp, parent_context)
                return
            ctx = parent_context if parent_context is not None else _get_current()
            entry: Optional[Entry] = getattr(ctx.get(_span_key), _ENTRY_ATTR, None)
            kind = span.kind
            # A request span starts a new entry unless it runs inside a live one (a consumer polled
            # inside a flow belongs to that flow).
            if (kind is _SERVER or kind is _CONSUMER) and (entry is None or entry.ended):
                self._open_entry(sp, Entry(sp, None, False))
                return
            if entry is not None:
                sp._hud_otel_entry = entry
                if entry.is_flow and not entry.ended:
                    _stamp(sp, entry.name or "")
        except Exception as exc:
            with internal_guard:
                raise exc

    def _open_entry(self, span: Any, entry: Entry) -> None:
        attach_entry(span, entry)
        if not _HAS_ON_ENDING:
            self._open[span.context.span_id] = entry

    def _flow_start(self, span: Any, parent_context: Optional[Context]) -> None:
        """A span marked as a flow by another tracer: admit it, or demote it to an ordinary span."""
        entry = entry_of(_parent_span(parent_context))
        live = entry if entry is not None and not entry.ended else None
        if live is None and parent_context is not None:
            # Started with an explicit parent: the context the code runs in may still hold a flow.
            current = entry_of(_parent_span(None))
            if current is not None and not current.ended:
                live = current
        rt = STATE.runtime
        reason: Optional[str] = None
        key: Optional[tuple[str, str, str]] = None
        if live is not None:
            reason = A.REASON_NESTED if live.is_flow else A.REASON_IN_REQUEST
        else:
            key = _flow_key(span)
            if key is None:
                reason = A.REASON_INVALID_NAME
            elif rt is not None and not rt.admit(key):
                reason = A.REASON_NAME_CAP
        if reason is None and key is not None:
            flow_type, framework, name = key
            attrs = span._attributes
            if _FLOW_NAME not in attrs:
                span.set_attribute(_FLOW_NAME, name)
            if A.FRAMEWORK not in attrs:
                span.set_attribute(A.FRAMEWORK, framework)
            self._open_entry(span, RawFlow(span, name, flow_type, framework))
            return
        assert reason is not None
        _demote(span, reason, live)
        if rt is not None:
            rt.count_skip(reason)
        # From here on it is an ordinary span.
        if live is not None:
            attach_entry(span, live)
        elif span.kind is _SERVER or span.kind is _CONSUMER:
            self._open_entry(span, Entry(span, None, False))
        elif entry is not None:
            attach_entry(span, entry)

    # -- end ---------------------------------------------------------------------------------------

    def _on_ending(self, span: Span) -> None:
        entry = getattr(span, _ENTRY_ATTR, None)
        # Only entries this processor opened: hud_otel's own flows are ended by the flow API, which
        # records their outcome and metrics (even if the user ended their span first).
        if entry is not None and entry.span is span and not entry.ended:
            try:
                kind = type(entry)
                if kind is Entry:
                    entry.ended = True
                elif kind is RawFlow:
                    entry.ended = True
                    _finish_raw_flow(entry, span, writable=True)
            except Exception as exc:
                with internal_guard:
                    raise exc

    def on_end(self, span: ReadableSpan) -> None:
        if self._open:
            try:
                ctx = span.context
                entry = self._open.pop(ctx.span_id, None) if ctx is not None else None
                if entry is not None and not entry.ended:
                    entry.ended = True
                    if type(entry) is RawFlow:
                        # Processors before this one may be exporting the span already: read only.
                        _finish_raw_flow(entry, span, writable=False)
            except Exception as exc:
                with internal_guard:
                    raise exc

    def shutdown(self) -> None:
        self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _stamp(span: Any, name: str) -> None:
    """Set ``hud.flow.name`` on a span that is starting (not yet shared with any other thread).

    ``set_attribute`` takes the span's lock and re-validates the value: about 1 µs, more than everything
    else the processor does for a span. The value is a validated ``str``, so when the span's limits leave
    room it goes straight into the attribute dict.
    """
    try:
        attrs = span._attributes
        values = attrs._dict
        maxlen = attrs.maxlen
        max_value_len = attrs.max_value_len
        if (
            not attrs._immutable
            and (maxlen is None or len(values) < maxlen)
            and (max_value_len is None or len(name) <= max_value_len)
        ):
            values[_FLOW_NAME] = name
            return
    except AttributeError:  # pragma: no cover - an SDK whose attribute mapping differs
        pass
    span.set_attribute(_FLOW_NAME, name)


def _flow_key(span: Any) -> Optional[tuple[str, str, str]]:
    """(flow_type, framework, name) of a raw-API flow span, or None if one of them is invalid."""
    attrs = span._attributes
    flow_type = attrs.get(_FLOW_TYPE)
    framework = attrs.get(A.FRAMEWORK, "custom")
    name = attrs.get(_FLOW_NAME, span.name)
    for value in (name, framework):
        if not isinstance(value, str) or not 0 < len(value) <= A.MAX_NAME_LENGTH or value.isspace():
            break
    else:
        if flow_type in _FLOW_TYPES:
            return flow_type, framework, name
    shown = repr((flow_type, framework, name))[:300]
    warn_once(
        ("raw_invalid_name", shown),
        "hud_otel: span marked as a flow has an invalid (hud.flow_type, hud.framework, hud.flow.name) "
        "%s; it is exported as an ordinary span",
        shown,
    )
    return None


def _demote(span: Any, reason: str, live: Optional[Entry]) -> None:
    """Turn a span marked as a flow into an ordinary span that says why it is not one."""
    span.set_attribute(A.FLOW_DEMOTED_REASON, reason)
    attrs = span._attributes
    try:
        del attrs[_FLOW_TYPE]
    except (KeyError, TypeError):
        pass
    if live is not None and live.is_flow:
        # Part of the flow it is nested in, like any other span started inside it.
        span.set_attribute(_FLOW_NAME, live.name or "")
    else:
        try:
            del attrs[_FLOW_NAME]
        except (KeyError, TypeError):
            pass


def _finish_raw_flow(flow: RawFlow, span: ReadableSpan, writable: bool) -> None:
    """Record a raw-API flow's metrics, read from its span as it ends.

    When ``writable`` (the SDK's ``_on_ending`` hook: the span has ended but no processor has seen it
    yet), a missing ``hud.flow.outcome`` is also written on the span, so that it reads on the wire like
    every other flow. The span's attributes are frozen by then, so this goes to their dict directly.
    """
    attrs = span.attributes or {}
    outcome = attrs.get(A.FLOW_OUTCOME)
    if outcome not in _OUTCOMES:
        outcome = A.OUTCOME_FAILURE if span.status.status_code is StatusCode.ERROR else A.OUTCOME_SUCCESS
        if writable:
            bounded: Any = span._attributes
            values = bounded._dict
            if bounded.maxlen is None or len(values) < bounded.maxlen:
                values[A.FLOW_OUTCOME] = outcome
    rt = STATE.runtime
    if rt is None or span.start_time is None or span.end_time is None:
        return
    metric_attrs: dict[str, Any] = {**flow.base_metric_attrs, A.FLOW_OUTCOME: outcome}
    if outcome == A.OUTCOME_FAILURE:
        metric_attrs[A.ERROR_TYPE] = _error_type(span, attrs)
    instruments = rt.instruments
    instruments.duration.record((span.end_time - span.start_time) / 1e9, metric_attrs)
    if flow.base_metric_attrs[A.FLOW_TYPE] != "queue":
        return
    e2e_ms = attrs.get(A.QUEUE_E2E_DURATION_MS)
    if isinstance(e2e_ms, (int, float)) and not isinstance(e2e_ms, bool) and e2e_ms >= 0:
        instruments.e2e_duration.record(e2e_ms / 1e3, flow.base_metric_attrs)
    count = attrs.get(A.QUEUE_MESSAGE_COUNT)
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        instruments.messages.add(count, flow.base_metric_attrs)


def _error_type(span: ReadableSpan, attrs: Any) -> str:
    """A failed raw-API flow's error: its ``error.type``, else the class of the last exception recorded
    on it (as for hud_otel's own flows), else ``_OTHER``."""
    error = attrs.get(A.ERROR_TYPE) or attrs.get(A.FLOW_ERROR)
    if isinstance(error, str):
        return error
    for event in reversed(span.events):
        if event.name == "exception":
            exc_type = (event.attributes or {}).get("exception.type")
            if isinstance(exc_type, str) and exc_type:
                return exc_type
    return _OTHER_ERROR
