"""The span processor: which spans are flows or requests, and which spans run inside one.

Every span any instrumentation starts passes through ``on_start``. A span inherits its parent's *entry*
(the flow or request it runs inside), so "inside a request" holds even with INTERNAL spans between the
request and the flow. The flow API asks :func:`entry_of` the same question before it starts a span.
"""

from __future__ import annotations

from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _attributes as A
from ._guard import internal_guard

# The parent context hud_otel's own flows are started with: the processor recognises it by identity and
# leaves the span alone (the flow API has already applied the rules to it).
FLOW_ROOT_CONTEXT = Context()

# Where a span's entry is kept on the span object itself, so it lives and dies with the span.
_ENTRY_ATTR = "_hud_otel_entry"
_REQUEST_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)


class Entry:
    """A flow or a request (a SERVER or CONSUMER span) that other spans may run inside."""

    __slots__ = ("ended", "is_flow", "name", "span")

    def __init__(self, span: Any, name: Optional[str], is_flow: bool) -> None:
        self.span = span
        self.name = name
        self.is_flow = is_flow
        self.ended = False

    def set_context(self, attributes: dict[str, Any]) -> None:
        """Write ``hud.context.*`` attributes onto the entry's span."""
        self.span.set_attributes(attributes)

    def set_failure(self, error: str, reason: Optional[str], attributes: dict[str, Any]) -> None:
        """Mark the entry's span failed now (a request span is Hud's flow for that request)."""
        span = self.span
        if attributes:
            span.set_attributes(attributes)
        span.set_attribute(A.FLOW_ERROR, error)
        span.set_attribute(A.ERROR_TYPE, error)
        span.set_status(Status(StatusCode.ERROR, reason or error))


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
        # span_id -> entry for request spans that are still open, so on_end can mark them ended.
        self._open: dict[int, Entry] = {}

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        if parent_context is FLOW_ROOT_CONTEXT:
            return
        with internal_guard:
            self._on_start(span, parent_context)

    def _on_start(self, span: Span, parent_context: Optional[Context]) -> None:
        if span.kind in _REQUEST_KINDS:
            attrs = span.attributes
            if not attrs or A.FLOW_TYPE not in attrs:
                entry = Entry(span, None, False)
                attach_entry(span, entry)
                self._open[span.context.span_id] = entry
                return
        parent_entry = entry_of(trace.get_current_span(parent_context))
        if parent_entry is None:
            return
        attach_entry(span, parent_entry)
        if parent_entry.is_flow and not parent_entry.ended:
            span.set_attribute(A.FLOW_NAME, parent_entry.name or "")

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is not None and self._open:
            entry = self._open.pop(ctx.span_id, None)
            if entry is not None:
                entry.ended = True

    def shutdown(self) -> None:
        self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
