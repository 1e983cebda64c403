"""hud-manual-flows.md, "Option A: Decorator": a sync function marked as a flow.

The reference example runs unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here. It calls each decorated function at once, so it runs inside ``main()``.
"""

from __future__ import annotations

from typing import Any


def collect_data(date: str) -> list[int]:
    return [len(date), 42]


def build_report(data: list[int]) -> dict[str, Any]:
    return {"rows": len(data), "total": sum(data)}


def main() -> None:
    # --- reference example: Option A: Decorator (sync) ---
    import hud_otel as hud_sdk

    @hud_sdk.sync_flow("nightly-report")
    def generate_nightly_report(date):
        data = collect_data(date)
        return build_report(data)

    # Each call is tracked as the "nightly-report" flow:
    generate_nightly_report("2026-06-17")
    # --- end of reference example ---


if __name__ == "__main__":
    import hud_otel as hud_sdk

    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
