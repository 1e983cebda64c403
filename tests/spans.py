"""Whole-span views for assertions: compare a span's name, kind, parent, attributes, status, links and
events in one ``==``, so a test cannot pass on one right field and miss the rest."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

# Attributes whose value depends on where the test file lives or on the clock; tests check them apart.
VOLATILE = ("code.file.path", "hud.queue.e2e_duration_ms")


def whole(span: ReadableSpan, *, keep_volatile: bool = False) -> dict[str, Any]:
    """Everything a backend would see of a span, as plain data."""
    attrs = dict(span.attributes or {})
    if not keep_volatile:
        for key in VOLATILE:
            attrs.pop(key, None)
    return {
        "name": span.name,
        "kind": span.kind.name,
        "parent": None if span.parent is None else format(span.parent.span_id, "016x"),
        "attributes": attrs,
        "status": (span.status.status_code.name, span.status.description),
        "links": [format(link.context.span_id, "016x") for link in span.links],
        "events": [event.name for event in span.events],
    }


def sid(span: Any) -> str:
    """A span's id as the hex string ``whole`` uses for parents and links."""
    ctx = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return format(ctx.span_id, "016x")


def custom(name: str, fn: str | None = None, **extra: Any) -> dict[str, Any]:
    """The attributes every custom flow span carries, plus ``extra``."""
    attrs: dict[str, Any] = {"hud.flow.name": name, "hud.flow_type": "custom", "hud.framework": "custom"}
    if fn is not None:
        attrs["code.function.name"] = fn
    attrs.update(extra)
    return attrs


def points(hud_flows: Any, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """A metric's data points keyed by their sorted attributes: count for histograms, value for sums."""
    out = {}
    for point in hud_flows.metric_points(metric):
        key = tuple(sorted(point.attributes.items()))
        out[key] = point.count if hasattr(point, "count") else point.value
    return out
