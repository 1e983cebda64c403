"""hud-manual-flows.md, "Mark Queue flows": a queue flow as a ``with`` block, with ``enqueued_at``.

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
    return Message({"sku": "A-1", "qty": 2}, datetime.now(timezone.utc) - timedelta(seconds=1.5))


def main() -> None:
    message = next_message()

    # --- reference example: Mark Queue flows (context manager) ---
    from datetime import datetime, timezone
    import hud_otel as hud_sdk

    with hud_sdk.sync_flow(
        "orders",
        flow_type=hud_sdk.FlowType.QUEUE,
        framework="sqs",
        enqueued_at=message.enqueued_at,  # a timezone-aware datetime
        message_count=1,
    ):
        process_order(message.payload)
    # --- end of reference example ---


if __name__ == "__main__":
    import hud_otel as hud_sdk

    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
