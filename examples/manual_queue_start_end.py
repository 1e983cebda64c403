"""hud-manual-flows.md, "Mark Queue flows": a queue flow with ``start_flow``/``end_flow``.

The reference example runs unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here. ``message`` is one message of an in-house queue.
"""

# ruff: noqa: F401, I001
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any


@dataclass
class Message:
    payload: dict[str, Any]
    enqueued_at: datetime


def process_order(payload: dict[str, Any]) -> None:
    assert payload["sku"]


def next_message() -> Message:
    """The next message of the queue, enqueued a moment ago."""
    return Message({"sku": "B-7", "qty": 1}, datetime.now(timezone.utc) - timedelta(seconds=0.5))


def main() -> None:
    message = next_message()

    # --- reference example: Mark Queue flows (start_flow / end_flow) ---
    from datetime import datetime, timezone
    import hud_otel as hud_sdk

    hud_sdk.start_flow(
        "orders",
        flow_type=hud_sdk.FlowType.QUEUE,
        framework="sqs",
        enqueued_at=message.enqueued_at,  # a timezone-aware datetime
        message_count=1,
    )
    try:
        process_order(message.payload)
    finally:
        hud_sdk.end_flow()
    # --- end of reference example ---


if __name__ == "__main__":
    import hud_otel as hud_sdk

    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
