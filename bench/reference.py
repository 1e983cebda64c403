"""Scenario 3: the reference ``hud-sdk`` (PyPI, ``bench`` extra) against hud_otel, each in its own process.

``hud-sdk`` patches the interpreter when imported, so it never shares a process with hud_otel: one child
process registers it (offline: no API key, no backend) and times its flows against a bare OpenTelemetry
span; another child does the same for hud_otel (with a metric reader attached). The two ratios are
compared: hud_otel's ratio / the reference's ratio must be <= 1.0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

from ._harness import Loop, bare_tracer_provider, compare, emit, metered_provider, row

ROUNDS = 31
N = 1500
ATTRS = {"hud.flow.name": "job", "hud.flow_type": "custom", "hud.framework": "custom"}


def _loop(fn: Callable[[], Any]) -> Loop:
    def loop(n: int) -> None:
        for _ in range(n):
            fn()

    return loop


def _measure(sdk: Any) -> dict[str, float]:
    """Time ``sdk``'s decorator, context manager and start/end against a bare span, here."""
    bare = bare_tracer_provider().get_tracer("bench")

    @sdk.sync_flow("job")
    def job() -> None:
        pass

    flow = sdk.sync_flow("job")

    def with_flow() -> None:
        with flow:
            pass

    def start_end() -> None:
        sdk.start_flow("job")
        sdk.end_flow()

    def span() -> None:
        with bare.start_as_current_span("job", attributes=ATTRS):
            pass

    return compare(
        {
            "decorator": _loop(job),
            "context manager": _loop(with_flow),
            "start_flow/end_flow": _loop(start_end),
            "span": _loop(span),
        },
        n=N,
        rounds=ROUNDS,
    )


def child_hud() -> dict[str, Any]:
    import hud_sdk
    from hud_sdk import hook
    from hud_sdk.run_mode import get_hud_running_mode

    hud_sdk.register()
    res: dict[str, Any] = dict(_measure(hud_sdk))
    res["registered"] = bool(getattr(hook, "register_success", False))
    res["mode"] = str(get_hud_running_mode())
    res["version"] = hud_sdk.__version__
    return res


def child_ours() -> dict[str, Any]:
    import hud_otel

    hud_otel.register(tracer_provider=bare_tracer_provider(), meter_provider=metered_provider())
    return dict(_measure(hud_otel))


def _child(which: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("HUD_OTEL_RAISE_INTERNAL", None)
    # No key and no backend: the reference must stay offline.
    for key in [k for k in env if k.startswith("HUD_")]:
        env.pop(key)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.reference", which],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD "):
            return dict(json.loads(line[len("CHILD ") :]))
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    raise RuntimeError(f"{which} child failed (exit {proc.returncode}): {tail}")


def run() -> list[dict[str, Any]]:
    try:
        import importlib.util

        if importlib.util.find_spec("hud_sdk") is None:
            raise RuntimeError("hud-sdk is not installed (pip install -e '.[bench]')")
        hud = _child("hud")
    except Exception as exc:
        return [row("3", "reference hud-sdk", None, None, "ours <= 1.0", False, note=f"not run: {exc}")]
    ours = _child("ours")
    rows = []
    for case in ("decorator", "context manager", "start_flow/end_flow"):
        hud_ratio = hud[case] / hud["span"]
        our_ratio = ours[case] / ours["span"]
        rel = our_ratio / hud_ratio
        rows.append(
            row(
                "3",
                f"vs hud-sdk {hud['version']}: {case}",
                ours[case],
                hud[case],
                "<= 1.0",
                rel <= 1.0,
                baseline="hud-sdk flow (own process)",
                value=rel,
                note=f"ours {our_ratio:.2f}x span, hud-sdk {hud_ratio:.2f}x span",
                our_span_ns=ours["span"],
                hud_span_ns=hud["span"],
                hud_mode=hud["mode"],
                hud_registered=hud["registered"],
            )
        )
    return rows


if __name__ == "__main__":
    arg = sys.argv[1:]
    if arg == ["run"]:
        emit(run())
    elif arg == ["hud"]:
        print("CHILD " + json.dumps(child_hud()), flush=True)
    elif arg == ["ours"]:
        print("CHILD " + json.dumps(child_ours()), flush=True)
