"""A first end-to-end check of the public API against the real SDK."""

import hud_otel as hud_sdk


def test_decorated_flow_exports_a_root_span(hud_flows):
    """A decorated function's call becomes one root span with the flow attributes."""

    @hud_sdk.sync_flow("nightly-report")
    def report(date):
        return f"report {date}"

    assert report("2026-06-17") == "report 2026-06-17"
    flow = hud_flows.flow("nightly-report")
    assert flow.outcome == "success"
    assert flow.span.parent is None
