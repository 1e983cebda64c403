"""A batch consumer: one queue flow per batch, with ``message_count`` and the oldest ``enqueued_at``.

When a consumer handles messages in batches, the batch is the unit of work: one flow per batch, with
``message_count`` set to the batch size (recorded as ``messaging.batch.message_count`` too) and
``enqueued_at`` set to the oldest message, so the end-to-end time is the worst wait in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import hud_otel as hud_sdk


@dataclass
class Event:
    user_id: int
    kind: str
    enqueued_at: datetime


def store(events: list[Event]) -> int:
    """Write the batch; returns how many rows were rejected."""
    return sum(1 for event in events if event.kind not in {"click", "view"})


def consume_batch(events: list[Event]) -> None:
    with hud_sdk.sync_flow(
        "analytics-events",
        flow_type=hud_sdk.FlowType.QUEUE,
        framework="kafka",
        enqueued_at=min(event.enqueued_at for event in events),
        message_count=len(events),
    ):
        rejected = store(events)
        hud_sdk.set_context(users=len({event.user_id for event in events}))
        if rejected:
            hud_sdk.set_failure("RowsRejected", reason=f"{rejected} of {len(events)} rows", rejected=rejected)


def main() -> None:
    now = datetime.now(timezone.utc)
    batches = [
        [Event(1, "click", now - timedelta(seconds=4)), Event(2, "view", now - timedelta(seconds=1))],
        [Event(1, "view", now - timedelta(seconds=2)), Event(3, "purchase?", now), Event(3, "click", now)],
    ]
    for batch in batches:
        consume_batch(batch)
    print(f"batch_consumer: consumed {sum(map(len, batches))} events in {len(batches)} batches")


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
