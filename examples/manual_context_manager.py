"""hud-manual-flows.md, "Option B: Context manager": a ``with`` block marked as a flow.

The reference example runs unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here.
"""

from __future__ import annotations

SESSIONS = {"s1": "expired", "s2": "live"}


def delete_expired_sessions() -> None:
    for sid in [sid for sid, state in SESSIONS.items() if state == "expired"]:
        del SESSIONS[sid]


def main() -> None:
    # --- reference example: Option B: Context manager (sync) ---
    import hud_otel as hud_sdk

    with hud_sdk.sync_flow("cleanup-expired-sessions"):
        delete_expired_sessions()
    # --- end of reference example ---


if __name__ == "__main__":
    import hud_otel as hud_sdk

    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
