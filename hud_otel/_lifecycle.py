"""Opt-in SIGTERM handling: the running flow ends failed and is flushed before the process dies.

A process killed by SIGTERM with the default disposition dies at once: ``atexit`` never runs, and the flow
it was in the middle of, with everything still queued, is lost. ``register(handle_sigterm=True)`` (or
``HUD_OTEL_HANDLE_SIGTERM=true``) installs a handler that, when the signal arrives:

1. with the default disposition: ends every running flow (the one where the signal landed, and those
   of other threads and tasks) as failed (error ``SIGTERM``), flushes within the exit timeout, then
   restores the default and delivers the signal again, so the process still dies of SIGTERM (its exit
   status, as its parent sees it, is unchanged);
2. with a handler the application installed before ``register()``: calls it first. If it raises (most
   do: ``sys.exit()``), the process is on its way out: the running flows end failed and are flushed,
   and the exception goes on unchanged. If it returns (a graceful "finish the current job" handler),
   the process is not dying, and the running flows go on untouched.

A disposition of ``SIG_IGN`` is left alone (the application chose to survive SIGTERM). Signal handlers
can only be installed from the main thread; elsewhere this logs a warning once and does nothing.
``os._exit()`` and SIGKILL skip every handler: they are the cases that lose data.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional, Union

from ._guard import internal_guard, logger, warn_once
from ._state import STATE

SIGTERM_ERROR = "SIGTERM"
ENV_VARIABLE = "HUD_OTEL_HANDLE_SIGTERM"

_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]
_installed: Optional[Callable[[int, Optional[FrameType]], None]] = None


def handle_sigterm_setting(argument: object) -> bool:
    """The ``handle_sigterm`` setting: the argument, else ``HUD_OTEL_HANDLE_SIGTERM``, else off.

    An explicit non-``bool`` argument raises ``TypeError`` (``register()`` rejects invalid arguments); a
    variable that is not a yes/no word is logged once and ignored.
    """
    if argument is not None:
        if not isinstance(argument, bool):
            raise TypeError(
                f"hud_otel.register(): handle_sigterm must be a bool, not {type(argument).__name__}"
            )
        return argument
    text = os.environ.get(ENV_VARIABLE, "").strip().lower()
    if text in ("", "false", "0", "no", "off"):
        return False
    if text in ("true", "1", "yes", "on"):
        return True
    warn_once(
        "sigterm_env",
        "hud_otel: %s must be true or false; SIGTERM is not handled",
        ENV_VARIABLE,
    )
    return False


def install_sigterm_handler(flush_timeout_s: float) -> bool:
    """Install the SIGTERM handler (once a process); True if it is in place."""
    global _installed
    if _installed is not None and signal.getsignal(signal.SIGTERM) is _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        warn_once(
            "sigterm_thread",
            "hud_otel: handle_sigterm needs register() to run in the main thread; SIGTERM is not handled",
        )
        return False
    previous: _Handler = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        logger.info("hud_otel: SIGTERM is ignored by this process; handle_sigterm leaves it so")
        return False

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        if callable(previous):
            try:
                previous(signum, frame)
            except BaseException:
                _end_running_flow_and_flush(flush_timeout_s)
                raise
            return  # the application handled it and goes on: so does its flow
        _end_running_flow_and_flush(flush_timeout_s)
        # Die of SIGTERM as the default disposition would have.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = on_sigterm
    return True


def _end_running_flow_and_flush(timeout_s: float) -> None:
    """End every running flow as failed, then flush; never raises.

    The flow where the signal landed first; then those of other threads and asyncio tasks, which no
    context variable here can reach: they are found among the live objects, a scan that costs the flow
    path nothing and is paid once, by a process that is about to die.
    """
    with internal_guard:
        from ._invocation import _FRAME, Invocation, finish  # imported late: signals are rare

        frame = _FRAME.get()
        while frame is not None:
            inv = frame.invocation
            if inv is not None and not inv.ended:
                finish(inv, None, SIGTERM_ERROR)
            frame = frame.parent
        for obj in gc.get_objects():
            if isinstance(obj, Invocation) and not obj.ended:
                finish(obj, None, SIGTERM_ERROR)
    rt = STATE.runtime
    if rt is not None and rt.pipeline is not None:
        with internal_guard:
            rt.pipeline.flush(timeout_s)
