"""Process-wide state: whether hud_otel is registered, and what the flow path needs once it is.

The flow modules read ``STATE.runtime`` once per call; before ``register()`` it is ``None`` and the
user's function is called directly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram, Meter

from . import _attributes as A
from ._guard import warn_once
from ._metrics import FlowMetrics

if TYPE_CHECKING:
    from ._export import Pipeline
    from ._invocation import Definition
    from ._processor import HudSpanProcessor


class Instruments:
    """The four flow metrics, with the attribute sets cached so the hot path allocates nothing."""

    __slots__ = ("_drop_attrs", "_skip_attrs", "dropped", "duration", "e2e_duration", "messages", "skipped")

    def __init__(self, meter: Meter) -> None:
        self.duration: Histogram = meter.create_histogram(
            A.METRIC_DURATION, unit="s", description="Duration of manual flows"
        )
        self.e2e_duration: Histogram = meter.create_histogram(
            A.METRIC_E2E_DURATION,
            unit="s",
            description="Time from enqueue to the end of processing, for queue flows",
        )
        self.messages: Counter = meter.create_counter(
            A.METRIC_MESSAGES, unit="{message}", description="Messages processed by queue flows"
        )
        self.skipped: Counter = meter.create_counter(
            A.METRIC_SKIPPED, unit="{flow}", description="Flows not recorded, by reason"
        )
        self.dropped: Counter = meter.create_counter(
            A.METRIC_EXPORT_DROPPED,
            unit="{span}",
            description="Spans the export could not deliver, by reason",
        )
        self._drop_attrs = {
            reason: {A.SKIP_REASON: reason} for reason in (A.DROP_QUEUE_FULL, A.DROP_EXPORT_FAILED)
        }
        # Aggregated per attribute set on the hot path, handed to the SDK when a reader collects.
        hook = FlowMetrics(meter)
        self.duration = hook.wrap(self.duration, True)
        self.e2e_duration = hook.wrap(self.e2e_duration, True)
        self.messages = hook.wrap(self.messages, False)
        self.skipped = hook.wrap(self.skipped, False)
        self.dropped = hook.wrap(self.dropped, False)
        self._skip_attrs: dict[str, dict[str, str]] = {}

    def count_drop(self, reason: str, spans: int) -> None:
        self.dropped.add(spans, self._drop_attrs[reason])

    def count_skip(self, reason: str) -> None:
        attrs = self._skip_attrs.get(reason)
        if attrs is None:
            attrs = self._skip_attrs[reason] = {A.SKIP_REASON: reason}
        self.skipped.add(1, attrs)


@dataclass
class Runtime:
    """Everything a flow needs after ``register()``; replaced whole, never mutated in place."""

    tracer: trace.Tracer
    instruments: Instruments
    processor: HudSpanProcessor
    max_flow_names: int
    # (flow_type, framework, name) seen so far: what the name cap counts.
    keys: set[tuple[str, str, str]] = field(default_factory=set)
    # Definitions of flows without code attributes (context managers, start_flow), by key.
    definitions: dict[tuple[str, str, str], Definition] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The providers in use and what hud_otel added to them (None for hand-made runtimes).
    pipeline: Optional[Pipeline] = None
    # Who registered: "register()" or the zero-code hook, for the second call's warning.
    origin: str = "register()"

    def count_skip(self, reason: str) -> None:
        self.instruments.count_skip(reason)

    def admit(self, key: tuple[str, str, str]) -> bool:
        """Whether a flow key fits under the name cap (keys already seen always do)."""
        if key in self.keys:
            return True
        with self.lock:
            if key in self.keys:
                return True
            if len(self.keys) < self.max_flow_names:
                self.keys.add(key)
                return True
        warn_once(
            ("name_cap", self.max_flow_names),
            "hud_otel: more than %d distinct flow names; new names are skipped "
            "(put variable data in set_context, or raise max_flow_names in register())",
            self.max_flow_names,
        )
        return False


class _State:
    __slots__ = ("runtime", "warned_unregistered")

    def __init__(self) -> None:
        self.runtime: Optional[Runtime] = None
        self.warned_unregistered = False


STATE = _State()


def warn_unregistered() -> None:
    """The one warning a process gets for flow calls made before ``register()``."""
    STATE.warned_unregistered = True
    warn_once(
        "not_registered",
        "hud_otel: a flow API was called before hud_otel.register(); it is not recorded "
        "(call register() once at start-up)",
    )
