"""A background loop: one flow per iteration, never one flow for the whole loop.

A flow that lasted as long as the process would never end (and never be exported); one flow per pass
gives a duration and an outcome per pass. A failing pass is recorded and the loop goes on.
"""

from __future__ import annotations

import threading

import hud_otel as hud_sdk

RATES = iter([{"EUR": 0.92}, {"EUR": 0.93}, None])  # None: the upstream answered nonsense


def poll_once() -> dict[str, float]:
    rates = next(RATES)
    if rates is None:
        raise ValueError("upstream sent an empty body")
    return rates


def run_loop(stop: threading.Event, iterations: int, interval_s: float = 0.0) -> None:
    for iteration in range(iterations):
        if stop.is_set():
            return
        try:
            with hud_sdk.sync_flow("poll-exchange-rates"):
                hud_sdk.set_context(iteration=iteration)
                rates = poll_once()
                hud_sdk.set_context(currencies=sorted(rates))
        except ValueError as exc:
            # The flow already recorded the failure; the loop itself keeps running.
            print(f"background_loop: iteration {iteration} failed: {exc}")
        stop.wait(interval_s)


def main() -> None:
    run_loop(threading.Event(), iterations=3)


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
