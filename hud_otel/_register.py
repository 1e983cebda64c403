"""``register()``, ``flush()`` and ``shutdown()``: set hud_otel up on the user's OpenTelemetry.

The settings are resolved in ``_config``; the providers and exporters are attached or built in
``_export``. This module ties them to the process: the one runtime, the flush at interpreter exit, and the
flush at the end of a ``multiprocessing`` child (which leaves through ``os._exit``, skipping ``atexit``).
"""

from __future__ import annotations

import atexit
import math
import threading
from collections.abc import Mapping
from typing import Any, Optional, Union

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from . import _attributes as A
from ._config import resolve
from ._export import build
from ._guard import internal_guard, logger, warn_once
from ._lifecycle import handle_sigterm_setting, install_sigterm_handler
from ._processor import HudSpanProcessor
from ._state import STATE, Instruments, Runtime
from ._version import __version__

_register_lock = threading.Lock()
_exit_hooks_installed = False
ORIGIN_CALL = "register()"
ORIGIN_ZERO_CODE = "opentelemetry-instrument"


def register(
    *,
    service: Optional[str] = None,
    api_key: Optional[str] = None,
    endpoint: Optional[str] = None,
    protocol: Optional[str] = None,
    headers: Optional[Mapping[str, str]] = None,
    insecure: Optional[bool] = None,
    tracer_provider: Optional[TracerProvider] = None,
    meter_provider: Optional[MeterProvider] = None,
    max_flow_names: Optional[int] = None,
    max_queue_size: Optional[int] = None,
    export_timeout_s: Optional[Union[int, float]] = None,
    metric_interval_s: Optional[Union[int, float]] = None,
    exit_timeout_s: Optional[Union[int, float]] = None,
    disabled: Optional[bool] = None,
    handle_sigterm: Optional[bool] = None,
) -> None:
    """Set hud_otel up; flows started before this call are not recorded.

    Each setting comes from the argument, else its ``HUD_OTEL_*`` environment variable, else the standard
    ``OTEL_*`` one, else its default (the README has the table)::

        hud_otel.register()                                        # a collector on localhost
        hud_otel.register(endpoint="https://otlp.example.com", api_key=key)   # a Hud endpoint
        hud_otel.register(tracer_provider=tp, meter_provider=mp)   # your own providers

    SDK providers already set globally (or passed in) are kept: hud_otel adds its span processor to them,
    and for a separate Hud endpoint an exporter that sends flows there. With none set, hud_otel builds
    them, exporting over OTLP, and installs them globally. Pending flows are sent at interpreter exit;
    with ``handle_sigterm=True`` also when the process is terminated by SIGTERM, the running flow ending
    failed (``docs/reliability.md``).

    Calling it twice is harmless: the second call warns and changes nothing. Raises ``TypeError`` or
    ``ValueError`` for an explicitly invalid argument, and nothing else.
    """
    arguments = {
        "service": service,
        "api_key": api_key,
        "endpoint": endpoint,
        "protocol": protocol,
        "headers": headers,
        "insecure": insecure,
        "max_flow_names": max_flow_names,
        "max_queue_size": max_queue_size,
        "export_timeout_s": export_timeout_s,
        "metric_interval_s": metric_interval_s,
        "exit_timeout_s": exit_timeout_s,
        "disabled": disabled,
    }
    sigterm = handle_sigterm_setting(handle_sigterm)
    before = STATE.runtime
    register_with(arguments, tracer_provider, meter_provider, ORIGIN_CALL)
    rt = STATE.runtime
    if sigterm and rt is not before and rt is not None and rt.pipeline is not None:  # this call registered
        install_sigterm_handler(rt.pipeline.exit_timeout_s)


def register_with(
    arguments: Mapping[str, Any],
    tracer_provider: Optional[TracerProvider],
    meter_provider: Optional[MeterProvider],
    origin: str,
) -> None:
    """:func:`register`, saying who called it."""
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError(
            "hud_otel.register(): tracer_provider must be an opentelemetry.sdk.trace.TracerProvider"
        )
    if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
        raise TypeError(
            "hud_otel.register(): meter_provider must be an opentelemetry.sdk.metrics.MeterProvider"
        )
    with _register_lock:
        if STATE.runtime is not None:
            if STATE.runtime.origin == ORIGIN_ZERO_CODE:
                logger.warning(
                    "hud_otel: already registered by opentelemetry-instrument; this register() call changes "
                    "nothing (configure hud_otel with HUD_OTEL_* environment variables there)"
                )
            else:
                logger.warning("hud_otel: register() was already called; this call changes nothing")
            return
        settings = resolve(arguments)
        if settings.disabled:
            warn_once(
                "disabled",
                "hud_otel: disabled by %s; no flow is recorded",
                settings.sources["disabled"],
            )
            STATE.warned_unregistered = True  # the one thing to say about flows has been said
            return
        pipeline = build(settings, tracer_provider, meter_provider)
        processor = HudSpanProcessor()
        pipeline.tracer_provider.add_span_processor(processor)
        STATE.runtime = Runtime(
            tracer=pipeline.tracer_provider.get_tracer(A.TRACER_NAME, __version__),
            instruments=Instruments(pipeline.meter_provider.get_meter(A.METER_NAME, __version__)),
            processor=processor,
            max_flow_names=settings.max_flow_names,
            pipeline=pipeline,
            origin=origin,
        )
        _install_exit_hooks()
        logger.debug("hud_otel: registered by %s with %r", origin, settings)


def flush(timeout_s: float = 5.0) -> bool:
    """Export pending flows and metrics now; True if everything was sent within ``timeout_s``.

    Never waits longer than ``timeout_s``, even with the backend down::

        hud_otel.flush(2.0)
    """
    rt = STATE.runtime
    if rt is None or rt.pipeline is None:
        return True
    with internal_guard:
        return rt.pipeline.flush(_timeout(timeout_s))
    return False


def shutdown(timeout_s: float = 5.0) -> None:
    """Flush, then stop recording flows; what hud_otel built or added to providers is shut down.

    Providers the application owns are left running. ``register()`` may be called again afterwards::

        hud_otel.shutdown()
    """
    with _register_lock:
        rt = STATE.runtime
        if rt is None:
            return
        STATE.runtime = None
        with internal_guard:
            rt.processor.shutdown()
            if rt.pipeline is not None:
                rt.pipeline.close(_timeout(timeout_s))


# An "infinite" wait, in a unit every timer and join() accepts.
_LONGEST_WAIT_S = 1_000_000


def _timeout(value: object) -> float:
    """``timeout_s`` as given to flush()/shutdown(), made usable: these never raise into the caller."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(min(max(value, 0), _LONGEST_WAIT_S))  # clamped as an int: any size is fine
    if isinstance(value, float) and not math.isnan(value):
        return min(max(value, 0.0), _LONGEST_WAIT_S)
    warn_once(
        ("timeout", type(value).__name__),
        "hud_otel: a timeout must be a number of seconds, not %s; 5 s is used",
        type(value).__name__,
    )
    return 5.0


def _flush_at_exit() -> None:
    """Send what is pending before the process ends, within the exit timeout; never raises."""
    rt = STATE.runtime
    if rt is None or rt.pipeline is None:
        return
    with internal_guard:
        _end_flows_left_open()
    try:
        if not rt.pipeline.close(rt.pipeline.exit_timeout_s):
            logger.warning(
                "hud_otel: pending flows were not all sent within %.1f s at exit",
                rt.pipeline.exit_timeout_s,
            )
    except Exception:
        logger.debug("hud_otel: the flush at exit failed", exc_info=True)


def _end_flows_left_open() -> None:
    """A script that dies between ``start_flow`` and ``end_flow`` (no ``finally``) would lose that flow:
    end the flows still open in this context, failed with the exception that killed the process if one
    did (the interpreter keeps it in ``sys.last_value``), successful otherwise."""
    import sys

    from ._invocation import _FRAME, finish

    fatal = getattr(sys, "last_value", None)
    frame = _FRAME.get()
    while frame is not None:
        inv = frame.invocation
        if inv is not None and not inv.ended:
            warn_once(
                ("open_at_exit", inv.name),
                "hud_otel: flow %r was still open at exit (start_flow without end_flow); it is ended now",
                inv.name,
            )
            finish(inv, fatal if isinstance(fatal, BaseException) else None)
        frame = frame.parent


def _after_multiprocessing_fork(_owner: object) -> None:
    # A multiprocessing child ends with os._exit(), which skips atexit; its finalizers still run.
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=10)


def _install_exit_hooks() -> None:
    global _exit_hooks_installed
    if _exit_hooks_installed:
        return
    _exit_hooks_installed = True
    atexit.register(_flush_at_exit)
    import multiprocessing.util

    multiprocessing.util.register_after_fork(_flush_at_exit, _after_multiprocessing_fork)
