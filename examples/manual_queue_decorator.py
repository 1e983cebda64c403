"""hud-manual-flows.md, "Mark Queue flows": a queue flow as a decorator on an ``async def`` handler.

The reference example is unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here. ``main()`` hands it two messages.
"""

# ruff: noqa: E402, I001
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass
class Message:
    payload: dict[str, Any]


async def process_order(payload: dict[str, Any]) -> None:
    await asyncio.sleep(0)


# --- reference example: Mark Queue flows (decorator) ---
# fmt: off
import hud_otel as hud_sdk

# enqueued_at / message_count are not available on the decorator.
@hud_sdk.async_flow("orders", flow_type=hud_sdk.FlowType.QUEUE, framework="sqs")
async def handle_order(message):
    await process_order(message.payload)
# fmt: on
# --- end of reference example ---


async def consume() -> None:
    for payload in ({"sku": "C-3"}, {"sku": "C-4"}):
        await handle_order(Message(payload))


def main() -> None:
    asyncio.run(consume())


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
