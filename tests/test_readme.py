"""Every ```python block of README.md runs, and the flows it names are recorded.

Blocks run in-process, one per test, from a clean slate (no hud_otel registration, no OpenTelemetry
global providers). The helpers the snippets call (``collect_data``, ``receive_messages``, ...) are the
stand-ins of ``PREAMBLE`` below. A block that calls ``register()`` exports for real, over OTLP/gRPC, to a
local receiver on loopback that ``OTEL_EXPORTER_OTLP_ENDPOINT`` points at (the default endpoint's
variable, so the block needs no change); the flows it names must arrive there. A block without
``register()`` runs under ``capture_flows``. A block that defines ``test_*`` functions gets them run,
each with its own ``hud_flows``-style capture.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hud_otel
from hud_otel._receiver import OtlpReceiver
from hud_otel._state import STATE
from hud_otel.testing import capture_flows

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
FLOW_NAME = re.compile(
    r"""(?:(?:sync_flow|async_flow|start_flow)\(\s*|"hud\.flow\.name":\s*)["']([^"']+)["']"""
)

PREAMBLE = textwrap.dedent(
    """
    import asyncio
    from dataclasses import dataclass, field
    from typing import Any, Optional


    def collect_data(date):
        return [date, 1, 2]


    def build_report(data):
        return {"rows": len(data)}


    def delete_expired_sessions():
        return 2


    def process_order(payload):
        return payload


    @dataclass
    class Message:
        order_id: str
        payload: dict
        sent_timestamp_ms: int


    def receive_messages():
        import time

        sent = int(time.time() * 1000) - 1500
        return [Message("o-1", {"sku": "A-1"}, sent), Message("o-2", {"sku": "B-2"}, sent)]


    @dataclass
    class BatchResult:
        rejected: bool
        reason: Optional[str] = None


    def run_batch(batch_id):
        return BatchResult(rejected=False)
    """
)


def _block_id(block: str) -> str:
    first = next(
        (line for line in block.splitlines() if line.strip() and not line.startswith(("import", "from"))), ""
    )
    return re.sub(r"\W+", "-", first.strip())[:40].strip("-")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> OtlpReceiver:
    """Only the receiver configured: no HUD_OTEL_*/OTEL_* setting of the machine leaks in."""
    import os

    for key in list(os.environ):
        if key.startswith(("HUD_OTEL_", "OTEL_")) and key != "HUD_OTEL_RAISE_INTERNAL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint)
    receiver.clear()
    return receiver


def _run_tests_defined(namespace: dict[str, Any]) -> list[str]:
    ran = []
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and callable(fn):
            params = inspect.signature(fn).parameters
            with capture_flows() as flows:
                fn(**({"hud_flows": flows} if "hud_flows" in params else {}))
            ran.append(name)
    return ran


def _shut_down_globals() -> None:
    """Stop what the block set up while the receiver still listens, so that nothing exports to a
    closed port at interpreter exit."""
    from opentelemetry import metrics, trace

    hud_otel.shutdown()
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        stop = getattr(provider, "shutdown", None)
        if stop is not None and not getattr(provider, "_shutdown", False):
            stop()


def test_the_readme_has_python_blocks():
    """The extraction finds the README's examples (a broken fence would silently skip them)."""
    assert len(BLOCKS) >= 7


@pytest.mark.usefixtures("otel_globals")
@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_readme_block_runs(block: str, clean_env: OtlpReceiver) -> None:
    """The block runs as written, and each flow name it uses is recorded: received over OTLP when the
    block calls register(), captured in memory otherwise; defined test functions pass."""
    namespace: dict[str, Any] = {"__name__": "readme_block"}
    exec(compile(PREAMBLE, "<readme preamble>", "exec", dont_inherit=True), namespace)
    code = compile(block, "README.md", "exec", dont_inherit=True)
    names = set(FLOW_NAME.findall(block))
    if "register(" in block:
        exec(code, namespace)
        assert STATE.runtime is not None
        assert hud_otel.flush(5.0)
        tested = _run_tests_defined(namespace)
        if names and not tested:
            spans = clean_env.wait_for_spans(
                len(names), predicate=lambda s: s.attributes.get("hud.flow.name") in names and s.is_root
            )
            assert {s.attributes["hud.flow.name"] for s in spans} == names
        _shut_down_globals()
    elif "capture_flows(" in block:
        exec(code, namespace)  # the block makes and checks its own capture
    else:
        with capture_flows() as flows:
            exec(code, namespace)
        tested = _run_tests_defined(namespace)
        if not tested:
            assert set(flows.names()) == names
