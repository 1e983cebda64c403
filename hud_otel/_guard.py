"""The internal-error guard and the one-time warnings.

hud_otel must never break the program it measures: its own bugs are caught here, logged once, and the
user's code goes on. Under hud_otel's own test suite (``HUD_OTEL_RAISE_INTERNAL=1``) they are re-raised so
that no bug hides behind the guard.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from types import TracebackType
from typing import Callable, TypeVar

from typing_extensions import ParamSpec

logger = logging.getLogger("hud_otel")

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Bounded so that a hostile stream of distinct bad inputs cannot grow memory without limit.
_MAX_WARNING_KEYS = 4096
_warned: set[object] = set()
_warned_lock = threading.Lock()


def _reraise_internal() -> bool:
    return os.environ.get("HUD_OTEL_RAISE_INTERNAL", "") == "1"


def warn_once(key: object, message: str, *args: object) -> bool:
    """Log ``message`` on the ``hud_otel`` logger the first time ``key`` is seen; True if it logged."""
    if key in _warned:
        return False
    with _warned_lock:
        if key in _warned:
            return False
        if len(_warned) >= _MAX_WARNING_KEYS:
            if "__overflow__" not in _warned:
                _warned.add("__overflow__")
                logger.warning("hud_otel: too many distinct warnings; further ones are suppressed")
            return False
        _warned.add(key)
    logger.warning(message, *args)
    return True


def warn_user_once(key: object, message: str, stacklevel: int) -> None:
    """A misuse found at decoration time: ``warnings.warn`` at the user's line, and the log once."""
    if warn_once(key, "%s", message):
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)


def reset_warnings() -> None:
    """Forget which warnings were given (for tests and ``hud_otel.testing``)."""
    with _warned_lock:
        _warned.clear()


class _Guard:
    """``with internal_guard:`` or ``@internal_guard``: swallow and log hud_otel's own errors."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report_internal_error(exc)
        return not _reraise_internal()

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R | None]:
        @functools.wraps(fn)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                report_internal_error(exc)
                if _reraise_internal():
                    raise
                return None

        return guarded


def report_internal_error(exc: BaseException) -> None:
    """Log an internal error once per (type, place), with its traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else None
    key = ("internal", type(exc).__name__, where)
    if key in _warned:
        return
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.error("hud_otel internal error (the application goes on)", exc_info=exc)


internal_guard = _Guard()
