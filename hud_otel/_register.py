"""``register()``, ``flush()`` and ``shutdown()``: set hud_otel up on the user's OpenTelemetry.

Attach, never replace: a global SDK provider the application already set gets hud_otel's span processor
added to it; only when none is set does hud_otel build one and install it globally.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from . import _attributes as A
from ._guard import internal_guard, logger, warn_once
from ._processor import HudSpanProcessor
from ._state import STATE, Instruments, Runtime
from ._version import __version__

_register_lock = threading.Lock()


def register(
    *,
    tracer_provider: Optional[Any] = None,
    meter_provider: Optional[Any] = None,
    max_flow_names: int = A.DEFAULT_MAX_FLOW_NAMES,
) -> None:
    """Set hud_otel up; flows started before this call are not recorded.

    With an SDK ``TracerProvider``/``MeterProvider`` passed in, or already set globally, hud_otel adds
    its span processor to it and records its metrics with it::

        hud_otel.register()                                   # the global providers
        hud_otel.register(tracer_provider=tp, meter_provider=mp)

    Calling it twice is harmless: the second call warns and changes nothing. Raises ``TypeError`` or
    ``ValueError`` for an explicitly invalid argument, and nothing else.
    """
    if isinstance(max_flow_names, bool) or not isinstance(max_flow_names, int):
        raise TypeError(f"max_flow_names must be an int, not {type(max_flow_names).__name__}")
    if max_flow_names < 1:
        raise ValueError(f"max_flow_names must be at least 1, got {max_flow_names}")
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError("tracer_provider must be an opentelemetry.sdk.trace.TracerProvider")
    if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
        raise TypeError("meter_provider must be an opentelemetry.sdk.metrics.MeterProvider")
    with _register_lock:
        if STATE.runtime is not None:
            logger.warning("hud_otel: register() was already called; this call changes nothing")
            return
        owned: list[Any] = []
        tp = tracer_provider if tracer_provider is not None else _global_tracer_provider(owned)
        mp = meter_provider if meter_provider is not None else _global_meter_provider(owned)
        processor = HudSpanProcessor()
        tp.add_span_processor(processor)
        tracer = tp.get_tracer(A.TRACER_NAME, __version__)
        meter = mp.get_meter(A.METER_NAME, __version__)
        STATE.runtime = Runtime(
            tracer=tracer,
            instruments=Instruments(meter),
            processor=processor,
            max_flow_names=max_flow_names,
            owned=owned,
            settings={"tracer_provider": tp, "meter_provider": mp},
        )


def _global_tracer_provider(owned: list[Any]) -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    owned.append(provider)
    return provider


def _global_meter_provider(owned: list[Any]) -> MeterProvider:
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        return current
    provider = MeterProvider()
    metrics.set_meter_provider(provider)
    owned.append(provider)
    return provider


def flush(timeout_s: float = 5.0) -> bool:
    """Export pending flows and metrics now; True if everything was flushed within ``timeout_s``."""
    rt = STATE.runtime
    if rt is None:
        return True
    ok = True
    with internal_guard:
        millis = max(1, int(timeout_s * 1000))
        ok = bool(rt.settings["tracer_provider"].force_flush(millis)) and ok
        ok = bool(rt.settings["meter_provider"].force_flush(millis)) and ok
    return ok


def shutdown(timeout_s: float = 5.0) -> None:
    """Flush, then stop recording flows; providers hud_otel built are shut down.

    A provider the application owns is left running. ``register()`` may be called again afterwards.
    """
    with _register_lock:
        rt = STATE.runtime
        if rt is None:
            return
        flush(timeout_s)
        STATE.runtime = None
        with internal_guard:
            rt.processor.shutdown()
            for provider in rt.owned:
                provider.shutdown()
    warn_once  # noqa: B018 - imported for the export issue's settings warnings
