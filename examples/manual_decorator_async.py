"""hud-manual-flows.md, "Option A: Decorator": an ``async def`` function marked as a flow.

The reference example is unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here; ``main()`` then calls the decorated coroutine.
"""

# ruff: noqa: E402, I001
from __future__ import annotations

import asyncio
from typing import Any


async def collect_data(date: str) -> list[int]:
    await asyncio.sleep(0)
    return [len(date), 42]


def build_report(data: list[int]) -> dict[str, Any]:
    return {"rows": len(data), "total": sum(data)}


# --- reference example: Option A: Decorator (async) ---
# fmt: off
import hud_otel as hud_sdk

@hud_sdk.async_flow("nightly-report")
async def generate_nightly_report(date):
    data = await collect_data(date)
    return build_report(data)
# fmt: on
# --- end of reference example ---


def main() -> None:
    asyncio.run(generate_nightly_report("2026-06-17"))


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
