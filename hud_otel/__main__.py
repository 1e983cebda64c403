"""``python -m hud_otel``: the ``hud-otel`` command line."""

from __future__ import annotations

import sys

from hud_otel._cli import main

if __name__ == "__main__":
    sys.exit(main())
