"""Helpers for the export tests: a clean environment, received spans as whole data, child scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from hud_otel._receiver import SpanRecord

SETTING_PREFIXES = ("OTEL_", "HUD_OTEL_")


def clean_environ(**extra: str) -> dict[str, str]:
    """``os.environ`` without any OpenTelemetry or hud_otel setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(extra)
    return env


def clear_settings(monkeypatch: Any) -> None:
    """Remove the developer's own OTEL_* / HUD_OTEL_* variables for one test (the suite's own flag stays)."""
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES) and name != "HUD_OTEL_RAISE_INTERNAL":
            monkeypatch.delenv(name)


def whole(record: SpanRecord) -> dict[str, Any]:
    """A received span as the backend sees it, in one comparable value (ids as lowercase hex)."""
    return {
        "name": record.name,
        "kind": record.kind,
        "parent": record.parent_span_id,
        "attributes": dict(record.attributes),
        "status": (record.status_code, record.status_description),
        "links": [link.span_id for link in record.links],
        "events": [event.name for event in record.events],
    }


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_script(
    source: str, env: Mapping[str, str], timeout: float = 60.0, cwd: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as ``python -c`` in a fresh interpreter with exactly ``env``."""
    return subprocess.run(
        [sys.executable, "-c", source],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
