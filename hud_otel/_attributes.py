"""Every attribute, metric and reason name hud_otel puts on the wire, named as in the contract."""

from __future__ import annotations

from typing import Final

# Span attributes (CONTRACT section 3).
FLOW_NAME: Final = "hud.flow.name"
FLOW_TYPE: Final = "hud.flow_type"
FRAMEWORK: Final = "hud.framework"
FLOW_OUTCOME: Final = "hud.flow.outcome"
FLOW_ERROR: Final = "hud.flow.error"
ERROR_TYPE: Final = "error.type"
CODE_FUNCTION_NAME: Final = "code.function.name"
CODE_FILE_PATH: Final = "code.file.path"
CONTEXT_PREFIX: Final = "hud.context."
# Set on a raw-API span that asked to be a flow but broke a rule; it is exported as an ordinary span.
FLOW_DEMOTED_REASON: Final = "hud.flow.skipped_reason"

MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"
QUEUE_MESSAGE_COUNT: Final = "hud.queue.message_count"
QUEUE_ENQUEUED_AT: Final = "hud.queue.enqueued_at"
QUEUE_E2E_DURATION_MS: Final = "hud.queue.e2e_duration_ms"

# Values.
OUTCOME_SUCCESS: Final = "success"
OUTCOME_FAILURE: Final = "failure"
OUTCOME_CANCELLED: Final = "cancelled"
OPERATION_PROCESS: Final = "process"

# Metrics (meter "hud_otel").
METER_NAME: Final = "hud_otel"
METRIC_DURATION: Final = "hud.flow.duration"
METRIC_E2E_DURATION: Final = "hud.flow.e2e_duration"
METRIC_MESSAGES: Final = "hud.flow.messages"
METRIC_SKIPPED: Final = "hud.flow.skipped"
# Spans the export pipeline could not deliver (attribute "reason": one of the DROP_* values below).
METRIC_EXPORT_DROPPED: Final = "hud.export.dropped"
SKIP_REASON: Final = "reason"

# Skip reasons (attribute "reason" of hud.flow.skipped).
REASON_INVALID_NAME: Final = "invalid_name"
REASON_NAME_CAP: Final = "name_cap"
REASON_NESTED: Final = "nested"
REASON_IN_REQUEST: Final = "in_request"
REASON_CLOCK_SKEW: Final = "clock_skew"

# Drop reasons (attribute "reason" of hud.export.dropped).
DROP_QUEUE_FULL: Final = "queue_full"
DROP_EXPORT_FAILED: Final = "export_failed"

# Limits.
MAX_NAME_LENGTH: Final = 256
MAX_CONTEXT_VALUE_LENGTH: Final = 1024
MAX_CONTEXT_KEYS: Final = 64
DEFAULT_MAX_FLOW_NAMES: Final = 1000

# framework string -> OpenTelemetry messaging.system registry value.
MESSAGING_SYSTEMS: Final = {
    "sqs": "aws_sqs",
    "aws_sqs": "aws_sqs",
    "rabbitmq": "rabbitmq",
    "kafka": "kafka",
    "pulsar": "pulsar",
    "rocketmq": "rocketmq",
    "activemq": "activemq",
    "gcp_pubsub": "gcp_pubsub",
    "pubsub": "gcp_pubsub",
    "servicebus": "servicebus",
    "eventhubs": "eventhubs",
}

TRACER_NAME: Final = "hud_otel"
