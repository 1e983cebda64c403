"""hud-manual-flows.md, "Option B: Context manager": an ``async with`` block marked as a flow.

The reference example runs unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here. ``async with`` needs a coroutine around it: ``cleanup()``.
"""

from __future__ import annotations

import asyncio

SESSIONS = {"s1": "expired", "s2": "live"}


async def delete_expired_sessions() -> None:
    await asyncio.sleep(0)
    for sid in [sid for sid, state in SESSIONS.items() if state == "expired"]:
        del SESSIONS[sid]


async def cleanup() -> None:
    # --- reference example: Option B: Context manager (async) ---
    import hud_otel as hud_sdk

    async with hud_sdk.async_flow("cleanup-expired-sessions"):
        await delete_expired_sessions()
    # --- end of reference example ---


def main() -> None:
    asyncio.run(cleanup())


if __name__ == "__main__":
    import hud_otel as hud_sdk

    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
