"""hud-manual-flows.md, "Option C: start_flow / end_flow": the manual pair in a cron job.

The reference example is unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here. ``main()`` runs the job twice: once fine, once failing (the flow
records ``CleanupFailed`` and the exception goes on to the caller, as the reference intends).
"""

# ruff: noqa: E402, I001
from __future__ import annotations

FAIL = {"next_run": False}


class DatabaseUnavailable(Exception):
    pass


def delete_expired_sessions() -> None:
    if FAIL["next_run"]:
        raise DatabaseUnavailable("connection refused")


# --- reference example: Option C: start_flow / end_flow ---
# fmt: off
import hud_otel as hud_sdk

def run_cron_job():
    hud_sdk.start_flow("cleanup-expired-sessions")
    try:
        delete_expired_sessions()
    except Exception:
        hud_sdk.set_failure("CleanupFailed")
        raise
    finally:
        hud_sdk.end_flow()
# fmt: on
# --- end of reference example ---


def main() -> None:
    run_cron_job()
    FAIL["next_run"] = True
    try:
        run_cron_job()
    except DatabaseUnavailable as exc:
        print(f"manual_start_end: the second run failed as planned: {exc!r}")
    finally:
        FAIL["next_run"] = False


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
