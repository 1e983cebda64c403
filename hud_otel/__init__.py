"""hud_otel: mark any block of code as a flow, shipped through OpenTelemetry.

import hud_otel as hud_sdk

hud_sdk.register()

@hud_sdk.sync_flow("nightly-report")
def generate_nightly_report(date): ...
"""

from ._flows import (
    AsyncFlow,
    FlowType,
    SyncFlow,
    async_flow,
    end_flow,
    set_context,
    set_failure,
    start_flow,
    sync_flow,
)
from ._processor import HudSpanProcessor
from ._register import flush, register, shutdown
from ._version import __version__

__all__ = [
    "AsyncFlow",
    "FlowType",
    "HudSpanProcessor",
    "SyncFlow",
    "__version__",
    "async_flow",
    "end_flow",
    "flush",
    "register",
    "set_context",
    "set_failure",
    "shutdown",
    "start_flow",
    "sync_flow",
]
