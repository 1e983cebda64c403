"""Zero-code registration: ``opentelemetry-instrument python app.py`` registers hud_otel by itself.

The hook is an ``opentelemetry_post_instrument`` entry point. ``opentelemetry-instrument`` runs those
last: after the distro and the configurator have installed the SDK providers and after every
instrumentor, so hud_otel attaches to that pipeline instead of building its own. It is neither a distro
nor a configurator, so it never competes with the one that is installed (only one of each may run).

Settings come from the environment only (``HUD_OTEL_*``, then ``OTEL_*``). ``HUD_OTEL_AUTO_REGISTER=false``,
or ``hud_otel`` in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, turns the hook off.
"""

from __future__ import annotations

import os

from ._guard import logger
from ._register import ORIGIN_ZERO_CODE, register_with

HOOK_NAME = "hud_otel"


def register_from_environment() -> None:
    """Register hud_otel from environment variables; never raises into ``opentelemetry-instrument``."""
    try:
        if os.environ.get("HUD_OTEL_AUTO_REGISTER", "").strip().lower() in ("false", "0", "no", "off"):
            return
        disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
        if HOOK_NAME in (name.strip() for name in disabled.split(",")):
            return
        register_with({}, None, None, ORIGIN_ZERO_CODE)
    except Exception:
        logger.exception("hud_otel: zero-code registration failed; the application goes on without flows")
