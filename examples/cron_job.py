"""A cron job: every run of the job is one flow, "cleanup-expired-sessions".

Run it from cron as ``python examples/cron_job.py``. ``register()`` at start-up, ``shutdown()`` at the end
so the flow is exported before the process exits (an exit hook does it too, bounded by a timeout).
"""

from __future__ import annotations

import time

import hud_otel as hud_sdk

# A stand-in for the job's database: session id -> expiry (seconds since the epoch).
SESSIONS = {"s1": 0.0, "s2": 0.0, "s3": time.time() + 3600}


@hud_sdk.sync_flow("cleanup-expired-sessions")
def cleanup_expired_sessions(now: float) -> int:
    """Delete the expired sessions; an exception here marks the flow failed."""
    expired = [sid for sid, expires in SESSIONS.items() if expires < now]
    for sid in expired:
        del SESSIONS[sid]
    hud_sdk.set_context(deleted=len(expired), remaining=len(SESSIONS))
    return len(expired)


def main() -> None:
    deleted = cleanup_expired_sessions(time.time())
    print(f"cron_job: deleted {deleted} expired sessions")


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
