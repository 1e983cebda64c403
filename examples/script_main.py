"""A script's ``main``: the whole run is one flow, and a partial failure is reported with set_failure.

``python examples/script_main.py`` backfills invoices; rows it cannot convert do not raise, but the run is
still a failure worth an investigation, so the script says so with ``set_failure``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import hud_otel as hud_sdk

ROWS = ["12.50", "7", "not-a-number", "3.25"]


@hud_sdk.sync_flow("parse-amount")
def parse_amount(row: str) -> Decimal:
    """A flow of its own when called on its own; inside ``backfill`` it is a nested attempt, skipped
    (``hud.flow.skipped{reason="nested"}``) so the backfill stays one flow."""
    return Decimal(row)


@hud_sdk.sync_flow("backfill-invoices")
def backfill(rows: list[str]) -> Decimal:
    """Sum what can be converted; record what cannot."""
    total = Decimal(0)
    bad = []
    for row in rows:
        try:
            total += parse_amount(row)
        except InvalidOperation:
            bad.append(row)
    hud_sdk.set_context(rows=len(rows), total=str(total))
    if bad:
        hud_sdk.set_failure("UnparseableRows", reason=f"{len(bad)} of {len(rows)} rows", bad_rows=bad)
    return total


def main() -> None:
    total = backfill(ROWS)
    print(f"script_main: backfilled {total}")
    print(f"script_main: a correction of {parse_amount('-0.75')}")


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
