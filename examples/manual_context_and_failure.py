"""hud-manual-flows.md, "Combining with context and failures": ``set_context`` and ``set_failure``.

The reference example is unchanged between the markers, except ``import hud_sdk``, which is
``import hud_otel as hud_sdk`` here. ``main()`` runs one accepted and one rejected batch.
"""

# ruff: noqa: E402, I001
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class BatchResult:
    rejected: bool
    reason: Optional[str] = None


def run_batch(batch_id: str) -> BatchResult:
    if batch_id.endswith("-bad"):
        return BatchResult(rejected=True, reason="3 rows failed validation")
    return BatchResult(rejected=False)


# --- reference example: Combining with context and failures ---
# fmt: off
import hud_otel as hud_sdk

@hud_sdk.sync_flow("process-batch")
def process_batch(batch_id):
    hud_sdk.set_context(batch_id=batch_id)
    result = run_batch(batch_id)
    if result.rejected:
        hud_sdk.set_failure("BatchRejected", reason=result.reason)
    return result
# fmt: on
# --- end of reference example ---


def main() -> None:
    process_batch("b-1")
    process_batch("b-2-bad")


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
