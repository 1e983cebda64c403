"""Shared test setup.

hud_otel's internal errors are re-raised under its own test suite, so no bug hides behind the guard.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["HUD_OTEL_RAISE_INTERNAL"] = "1"

import hud_otel
from hud_otel._guard import reset_warnings
from hud_otel._state import STATE


def _reset_otel_globals() -> None:
    # OpenTelemetry lets a process set its global providers once; tests that exercise "a provider is
    # already set globally" need a clean slate before and after.
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    del metrics


@pytest.fixture
def otel_globals() -> Iterator[None]:
    """A clean slate of OpenTelemetry global providers and hud_otel state, restored afterwards."""
    hud_otel.shutdown()
    _reset_otel_globals()
    reset_warnings()
    STATE.warned_unregistered = False
    yield
    hud_otel.shutdown()
    _reset_otel_globals()
    reset_warnings()
    STATE.warned_unregistered = False


@pytest.fixture(autouse=True)
def _hud_state_is_clean() -> Iterator[None]:
    """Every test starts unregistered with no warning given, whatever the previous one did."""
    if STATE.runtime is not None:
        hud_otel.shutdown()
    reset_warnings()
    STATE.warned_unregistered = False
    yield
    if STATE.runtime is not None:
        hud_otel.shutdown()
