"""A RabbitMQ-like consumer callback with ``start_flow``/``end_flow``.

A pika-style ``on_message(channel, method, properties, body)`` callback: the flow starts when the message
arrives and ends after the ack or nack. ``properties.timestamp`` (AMQP: seconds since the epoch, set by
the publisher) gives ``enqueued_at``. The manual pair records no exception on its own, so the callback
calls ``set_failure`` itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import hud_otel as hud_sdk


@dataclass
class BasicProperties:
    timestamp: Optional[int] = None
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Method:
    delivery_tag: int
    routing_key: str = "emails"


@dataclass
class FakeChannel:
    """Records acks and nacks the way a broker would see them."""

    acked: list[int] = field(default_factory=list)
    nacked: list[int] = field(default_factory=list)

    def basic_ack(self, delivery_tag: int) -> None:
        self.acked.append(delivery_tag)

    def basic_nack(self, delivery_tag: int, requeue: bool = False) -> None:
        self.nacked.append(delivery_tag)


def send_email(payload: dict[str, Any]) -> None:
    if "@" not in payload["to"]:
        raise ValueError(f"bad address {payload['to']!r}")


def on_message(channel: FakeChannel, method: Method, properties: BasicProperties, body: bytes) -> None:
    enqueued_at = None
    if properties.timestamp is not None:
        enqueued_at = datetime.fromtimestamp(properties.timestamp, tz=timezone.utc)
    hud_sdk.start_flow(
        method.routing_key,
        flow_type=hud_sdk.FlowType.QUEUE,
        framework="rabbitmq",
        enqueued_at=enqueued_at,
        message_count=1,
    )
    try:
        payload = json.loads(body)
        hud_sdk.set_context(template=payload["template"])
        send_email(payload)
        channel.basic_ack(method.delivery_tag)
    except ValueError as exc:
        hud_sdk.set_failure(type(exc).__name__, reason=str(exc))
        channel.basic_nack(method.delivery_tag, requeue=False)
    finally:
        hud_sdk.end_flow()


def main() -> None:
    channel = FakeChannel()
    published = int(time.time()) - 3
    deliveries = [
        {"to": "ada@example.com", "template": "welcome"},
        {"to": "nobody", "template": "welcome"},
    ]
    for tag, payload in enumerate(deliveries, start=1):
        body = json.dumps(payload).encode()
        on_message(channel, Method(tag), BasicProperties(timestamp=published), body)
    print(f"rabbitmq_consumer: acked {channel.acked}, nacked {channel.nacked}")


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
