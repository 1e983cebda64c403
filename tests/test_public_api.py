"""The public surface: changed only on purpose, drop-in with the reference, cheap before register()."""

from __future__ import annotations

import gc
import tracemalloc

import hud_otel
import hud_otel as hud_sdk


def test_public_names_are_locked():
    """__all__ is the public API of CONTRACT section 1 plus the span processor; a change must be deliberate."""
    assert sorted(hud_otel.__all__) == sorted(
        [
            "AsyncFlow",
            "FlowType",
            "HudSpanProcessor",
            "SyncFlow",
            "__version__",
            "async_flow",
            "end_flow",
            "flush",
            "register",
            "set_context",
            "set_failure",
            "shutdown",
            "start_flow",
            "sync_flow",
        ]
    )
    for name in hud_otel.__all__:
        assert getattr(hud_otel, name) is not None
        if not name.startswith("__"):
            assert getattr(hud_otel, name).__doc__, f"{name} has no docstring"


def test_the_init_module_only_reexports():
    """Implementation lives in private modules; the package's __init__ defines nothing of its own."""
    for name in hud_otel.__all__:
        if name != "__version__":
            assert getattr(hud_otel, name).__module__.startswith("hud_otel._")


def test_before_register_a_decorated_call_allocates_nothing_in_hud_otel():
    """Before register() the wrapper makes no span, no context lookup and no allocation of its own."""

    @hud_sdk.sync_flow("early")
    def early(x):
        return x

    early(0)  # the one-time warning happens here, outside the measured window
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(1000):
            early(i)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = tracemalloc.Filter(True, hud_otel.__file__.rsplit("/", 1)[0] + "/*")
    diff = after.filter_traces([ours]).compare_to(before.filter_traces([ours]), "lineno")
    # The call's own argument tuple may still be alive at the snapshot; nothing per call may remain.
    assert sum(d.size_diff for d in diff if d.size_diff > 0) < 256
