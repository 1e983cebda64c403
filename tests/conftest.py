"""Shared test setup: hud_otel's internal errors are re-raised under its own test suite."""

import os

os.environ["HUD_OTEL_RAISE_INTERNAL"] = "1"
