"""An SQS-like consumer: one queue flow per message, with ``enqueued_at`` from the message.

SQS reports when a message was sent as ``Attributes["SentTimestamp"]`` (milliseconds since the epoch);
turned into a timezone-aware ``datetime`` it gives Hud the time the message waited in the queue. The
in-memory queue below stands in for ``boto3``'s ``receive_message``, so the example needs no AWS.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import hud_otel as hud_sdk


class FakeSqsQueue:
    """Just enough of SQS: ``receive_message`` returns messages shaped like boto3's."""

    def __init__(self, bodies: list[dict[str, Any]], waited_s: float) -> None:
        sent_ms = int((time.time() - waited_s) * 1000)
        self.messages = [
            {"MessageId": f"m{i}", "Body": json.dumps(body), "Attributes": {"SentTimestamp": str(sent_ms)}}
            for i, body in enumerate(bodies)
        ]

    def receive_message(self, max_messages: int = 1) -> list[dict[str, Any]]:
        batch, self.messages = self.messages[:max_messages], self.messages[max_messages:]
        return batch


class PaymentDeclined(Exception):
    pass


def process_order(order: dict[str, Any]) -> None:
    hud_sdk.set_context(order_id=order["id"], tenant=order["tenant"])
    if order["amount"] > 1000:
        raise PaymentDeclined(f"order {order['id']}")


def consume(queue: FakeSqsQueue) -> None:
    while messages := queue.receive_message():
        message = messages[0]
        sent_ms = int(message["Attributes"]["SentTimestamp"])
        enqueued_at = datetime.fromtimestamp(sent_ms / 1000, tz=timezone.utc)
        try:
            with hud_sdk.sync_flow(
                "orders",
                flow_type=hud_sdk.FlowType.QUEUE,
                framework="sqs",
                enqueued_at=enqueued_at,
                message_count=1,
            ):
                process_order(json.loads(message["Body"]))
        except PaymentDeclined:
            print(f"sqs_consumer: {message['MessageId']} declined; left for the dead-letter queue")


def main() -> None:
    orders = [
        {"id": "o-1", "tenant": "acme", "amount": 25},
        {"id": "o-2", "tenant": "globex", "amount": 5000},
    ]
    consume(FakeSqsQueue(orders, waited_s=2.0))


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
