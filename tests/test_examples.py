"""Every script in ``examples/`` runs, under the ``hud_flows`` fixture and as a process of its own.

Under the fixture each example's ``main()`` is run and its flow spans are compared whole. As a subprocess
each runs the way a user runs it (``python examples/x.py``: ``register()``, ``main()``, ``shutdown()``),
exporting to a local OTLP receiver found through ``OTEL_EXPORTER_OTLP_ENDPOINT``, and one runs with no
endpoint configured at all. The reference examples are also checked to be the reference text itself.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from hud_otel._receiver import OtlpReceiver
from hud_otel.testing import HudFlows
from tests.spans import points, whole

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STEMS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
SPEC = ROOT.parent / "shared" / "spec" / "hud-manual-flows.md"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def run_main(stem: str) -> None:
    """Load ``examples/<stem>.py`` as the module ``<stem>`` (not as ``__main__``) and call ``main()``."""
    namespace = runpy.run_path(str(EXAMPLES / f"{stem}.py"), run_name=stem)
    namespace["main"]()


def expected(
    name: str,
    *,
    fn: Optional[str] = None,
    queue: Optional[tuple[str, str]] = None,
    context: Optional[dict[str, Any]] = None,
    error: Optional[str] = None,
    status: Optional[str] = None,
    outcome: Optional[str] = None,
    exception: bool = False,
    message_count: Optional[int] = None,
    enqueued: bool = False,
) -> dict[str, Any]:
    """The whole span (as ``tests.spans.whole`` shows it) of a flow exported by an example."""
    attrs: dict[str, Any] = {
        "hud.flow.name": name,
        "hud.flow_type": "queue" if queue else "custom",
        "hud.framework": queue[0] if queue else "custom",
        "hud.flow.outcome": outcome or ("failure" if error else "success"),
    }
    if fn is not None:
        attrs["code.function.name"] = fn
    if queue:
        attrs.update(
            {
                "messaging.system": queue[1],
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": name,
            }
        )
    if message_count is not None:
        attrs["hud.queue.message_count"] = message_count
        if message_count >= 2:
            attrs["messaging.batch.message_count"] = message_count
    if enqueued:
        attrs["hud.queue.enqueued_at"] = "<RFC 3339 UTC>"
    if error:
        attrs["error.type"] = error
        attrs["hud.flow.error"] = error
    for key, value in (context or {}).items():
        attrs[f"hud.context.{key}"] = value
    return {
        "name": f"process {name}" if queue else name,
        "kind": "CONSUMER" if queue else "INTERNAL",
        "parent": None,
        "attributes": attrs,
        "status": ("ERROR", status or error) if error else ("UNSET", None),
        "links": [],
        "events": ["exception"] if exception else [],
    }


def flow_spans(flows: HudFlows) -> list[dict[str, Any]]:
    """The whole flow spans, in the order they ended, with the clock-dependent enqueue time checked
    for its form and then replaced by a placeholder."""
    out = []
    for flow in flows.flows():
        span = whole(flow.span)
        enqueued = span["attributes"].get("hud.queue.enqueued_at")
        if enqueued is not None:
            assert RFC3339_UTC.match(enqueued), enqueued
            span["attributes"]["hud.queue.enqueued_at"] = "<RFC 3339 UTC>"
        out.append(span)
    return out


def e2e_ms(flows: HudFlows) -> list[float]:
    return [f.e2e_duration_ms for f in flows.flows() if f.e2e_duration_ms is not None]


# -- the patterns ----------------------------------------------------------------------------------


def check_cron_job(flows: HudFlows) -> None:
    assert flow_spans(flows) == [
        expected(
            "cleanup-expired-sessions",
            fn="cron_job.cleanup_expired_sessions",
            context={"deleted": 2, "remaining": 1},
        )
    ]


def check_script_main(flows: HudFlows) -> None:
    assert flow_spans(flows) == [
        expected(
            "backfill-invoices",
            fn="script_main.backfill",
            error="UnparseableRows",
            status="1 of 4 rows",
            context={"rows": 4, "total": "22.75", "bad_rows": ("not-a-number",), "reason": "1 of 4 rows"},
        ),
        expected("parse-amount", fn="script_main.parse_amount"),
    ]
    # The four calls inside the backfill were nested attempts: skipped, the exception passed through.
    assert flows.skipped() == {"nested": 4}


def check_background_loop(flows: HudFlows) -> None:
    ok = [expected("poll-exchange-rates", context={"iteration": i, "currencies": ("EUR",)}) for i in (0, 1)]
    failed = expected(
        "poll-exchange-rates",
        context={"iteration": 2},
        error="ValueError",
        status="ValueError: upstream sent an empty body",
        exception=True,
    )
    assert flow_spans(flows) == [*ok, failed]


def check_sqs_consumer(flows: HudFlows) -> None:
    queue = ("sqs", "aws_sqs")
    assert flow_spans(flows) == [
        expected(
            "orders",
            queue=queue,
            message_count=1,
            enqueued=True,
            context={"order_id": "o-1", "tenant": "acme"},
        ),
        expected(
            "orders",
            queue=queue,
            message_count=1,
            enqueued=True,
            context={"order_id": "o-2", "tenant": "globex"},
            error="PaymentDeclined",
            status="PaymentDeclined: order o-2",
            exception=True,
        ),
    ]
    # The messages were sent 2 s before consumption (SentTimestamp has millisecond precision).
    assert all(ms >= 1999 for ms in e2e_ms(flows))
    assert points(flows, "hud.flow.messages") == {
        (("hud.flow.name", "orders"), ("hud.flow_type", "queue"), ("hud.framework", "sqs")): 2
    }


def check_rabbitmq_consumer(flows: HudFlows) -> None:
    queue = ("rabbitmq", "rabbitmq")
    assert flow_spans(flows) == [
        expected("emails", queue=queue, message_count=1, enqueued=True, context={"template": "welcome"}),
        expected(
            "emails",
            queue=queue,
            message_count=1,
            enqueued=True,
            context={"template": "welcome", "reason": "bad address 'nobody'"},
            error="ValueError",
            status="bad address 'nobody'",
        ),
    ]
    # AMQP timestamps are whole seconds: published at int(now) - 3, so at least 2 s ago.
    assert all(ms >= 2000 for ms in e2e_ms(flows))


def check_batch_consumer(flows: HudFlows) -> None:
    queue = ("kafka", "kafka")
    assert flow_spans(flows) == [
        expected("analytics-events", queue=queue, message_count=2, enqueued=True, context={"users": 2}),
        expected(
            "analytics-events",
            queue=queue,
            message_count=3,
            enqueued=True,
            context={"users": 2, "rejected": 1, "reason": "1 of 3 rows"},
            error="RowsRejected",
            status="1 of 3 rows",
        ),
    ]
    first, second = e2e_ms(flows)
    assert first >= 4000 and second >= 2000  # the oldest message of each batch
    assert points(flows, "hud.flow.messages") == {
        (("hud.flow.name", "analytics-events"), ("hud.flow_type", "queue"), ("hud.framework", "kafka")): 5
    }


def check_async_worker(flows: HudFlows) -> None:
    fn = "async_worker.resize_image"
    spans = sorted(flow_spans(flows), key=lambda s: s["attributes"]["hud.context.image_id"])
    assert spans == [
        expected("resize-image", fn=fn, context={"image_id": "a", "width": 640}),
        expected(
            "resize-image",
            fn=fn,
            context={"image_id": "b", "width": 0},
            error="ZeroDivisionError",
            status="ZeroDivisionError: width 0",
            exception=True,
        ),
        expected("resize-image", fn=fn, context={"image_id": "c", "width": 320}, outcome="cancelled"),
    ]
    assert flows.skipped() == {}


def check_flask_app(flows: HudFlows) -> None:
    # The request span is Flask instrumentation's; its http.* attributes vary with that package's
    # version, so the test pins what hud_otel is responsible for and the rest of the span whole.
    server = [s for s in flows.spans() if s.kind.name == "SERVER"]
    assert len(server) == 1
    request = whole(server[0])
    http_attrs = {k: v for k, v in request["attributes"].items() if not k.startswith("hud.")}
    assert request == {
        "name": "GET /reports/<report_id>",
        "kind": "SERVER",
        "parent": None,
        "attributes": {**http_attrs, "hud.context.report_id": "r-42"},
        "status": ("UNSET", None),
        "links": [],
        "events": [],
    }
    assert http_attrs["http.route"] == "/reports/<report_id>"
    assert flow_spans(flows) == [
        expected("generate-report", fn="flask_app.generate_report", context={"report_id": "r-nightly"})
    ]
    assert flows.skipped() == {"in_request": 1}


# -- the reference examples ------------------------------------------------------------------------


def check_manual_decorator(flows: HudFlows) -> None:
    fn = "manual_decorator.main.<locals>.generate_nightly_report"
    assert flow_spans(flows) == [expected("nightly-report", fn=fn)]


def check_manual_decorator_async(flows: HudFlows) -> None:
    fn = "manual_decorator_async.generate_nightly_report"
    assert flow_spans(flows) == [expected("nightly-report", fn=fn)]


def check_manual_context_manager(flows: HudFlows) -> None:
    assert flow_spans(flows) == [expected("cleanup-expired-sessions")]


def check_manual_context_manager_async(flows: HudFlows) -> None:
    assert flow_spans(flows) == [expected("cleanup-expired-sessions")]


def check_manual_start_end(flows: HudFlows) -> None:
    # The manual pair records no exception event: set_failure carries the failure.
    assert flow_spans(flows) == [
        expected("cleanup-expired-sessions"),
        expected("cleanup-expired-sessions", error="CleanupFailed"),
    ]


def check_manual_queue_context_manager(flows: HudFlows) -> None:
    assert flow_spans(flows) == [expected("orders", queue=("sqs", "aws_sqs"), message_count=1, enqueued=True)]
    assert all(ms >= 1500 for ms in e2e_ms(flows))


def check_manual_queue_start_end(flows: HudFlows) -> None:
    assert flow_spans(flows) == [expected("orders", queue=("sqs", "aws_sqs"), message_count=1, enqueued=True)]
    assert all(ms >= 500 for ms in e2e_ms(flows))


def check_manual_queue_decorator(flows: HudFlows) -> None:
    fn = "manual_queue_decorator.handle_order"
    assert flow_spans(flows) == [expected("orders", queue=("sqs", "aws_sqs"), fn=fn)] * 2


def check_manual_context_and_failure(flows: HudFlows) -> None:
    fn = "manual_context_and_failure.process_batch"
    assert flow_spans(flows) == [
        expected("process-batch", fn=fn, context={"batch_id": "b-1"}),
        expected(
            "process-batch",
            fn=fn,
            context={"batch_id": "b-2-bad", "reason": "3 rows failed validation"},
            error="BatchRejected",
            status="3 rows failed validation",
        ),
    ]


CHECKS: dict[str, Callable[[HudFlows], None]] = {
    name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")
}


def test_every_example_has_a_check():
    """No example escapes the span assertions: each file in examples/ has a check, and each check a file."""
    assert sorted(CHECKS) == STEMS


@pytest.mark.parametrize("stem", [s for s in STEMS if s != "flask_app"])
def test_example_main_exports_its_flows(stem, hud_flows):
    """Each example's main(), run under the hud_flows fixture, exports exactly the flows it promises."""
    run_main(stem)
    CHECKS[stem](hud_flows)
    assert_metrics_match_flows(hud_flows)


def assert_metrics_match_flows(flows: HudFlows) -> None:
    """hud.flow.duration counts exactly the exported flows, by name, type, framework, outcome and error;
    hud.flow.e2e_duration counts the queue flows with a queue wait."""
    by_labels: dict[tuple[tuple[str, Any], ...], int] = {}
    waits: dict[tuple[tuple[str, Any], ...], int] = {}
    for flow in flows.flows():
        labels = {
            "hud.flow.name": flow.name,
            "hud.flow_type": flow.flow_type,
            "hud.framework": flow.framework,
            "hud.flow.outcome": flow.outcome,
        }
        if flow.error is not None:
            labels["error.type"] = flow.error
        key = tuple(sorted(labels.items()))
        by_labels[key] = by_labels.get(key, 0) + 1
        if flow.e2e_duration_ms is not None:
            base = tuple(
                sorted(
                    (k, v)
                    for k, v in labels.items()
                    if k in ("hud.flow.name", "hud.flow_type", "hud.framework")
                )
            )
            waits[base] = waits.get(base, 0) + 1
    assert points(flows, "hud.flow.duration") == by_labels
    assert points(flows, "hud.flow.e2e_duration") == waits


@pytest.mark.hud_flows(global_providers=True)
def test_flask_example_skips_the_flow_inside_the_request(hud_flows):
    """The Flask example, with Flask instrumentation on the (captured) global provider: the flow tried
    inside the request is skipped as in_request and its context lands on the request span; the same
    function called outside a request is a flow."""
    run_main("flask_app")
    check_flask_app(hud_flows)


def test_examples_follow_the_demo_convention():
    """Every example defines main() and calls register()/shutdown() only under ``__main__``, so that
    ``hud-otel demo`` (and these tests) can run main() against their own providers."""
    for stem in STEMS:
        tree = ast.parse((EXAMPLES / f"{stem}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), stem
        guarded: set[int] = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                guarded.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if is_call and node.func.attr in {"register", "shutdown"}:
                assert id(node) in guarded, f"{stem}: {ast.unparse(node)} outside __main__"


# The flow names each example exports when run as a script.
SCRIPT_FLOWS = {
    "async_worker": {"resize-image"},
    "background_loop": {"poll-exchange-rates"},
    "batch_consumer": {"analytics-events"},
    "cron_job": {"cleanup-expired-sessions"},
    "flask_app": {"generate-report"},
    "manual_context_and_failure": {"process-batch"},
    "manual_context_manager": {"cleanup-expired-sessions"},
    "manual_context_manager_async": {"cleanup-expired-sessions"},
    "manual_decorator": {"nightly-report"},
    "manual_decorator_async": {"nightly-report"},
    "manual_queue_context_manager": {"orders"},
    "manual_queue_decorator": {"orders"},
    "manual_queue_start_end": {"orders"},
    "manual_start_end": {"cleanup-expired-sessions"},
    "rabbitmq_consumer": {"emails"},
    "script_main": {"backfill-invoices", "parse-amount"},
    "sqs_consumer": {"orders"},
}


def _script_env(**extra: str) -> dict[str, str]:
    """This environment without any HUD_OTEL_*/OTEL_* setting of the machine, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HUD_OTEL_", "OTEL_")) or k == "HUD_OTEL_RAISE_INTERNAL"
    }
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _run_script(stem: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{stem}.py")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def test_every_example_has_its_script_flows():
    """The script test below knows every example."""
    assert sorted(SCRIPT_FLOWS) == STEMS


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_example_runs_as_a_script(stem, tmp_path, receiver):
    """``python examples/<stem>.py`` with only ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (to a local receiver,
    the way a collector is found): exit 0, no traceback, and its flows arrive over OTLP."""
    receiver.clear()
    result = _run_script(stem, tmp_path, _script_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    received = {s.attributes["hud.flow.name"] for s in receiver.spans() if "hud.flow_type" in s.attributes}
    assert received == SCRIPT_FLOWS[stem]


def test_an_example_runs_without_any_backend(tmp_path):
    """With no endpoint configured (the default, localhost:4317) and, as a rule, nothing listening there,
    a script still prints its output and exits 0, within the bounded shutdown."""
    started = time.monotonic()
    result = _run_script("cron_job", tmp_path, _script_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cron_job: deleted 2 expired sessions\n"
    assert "Traceback" not in result.stderr, result.stderr
    # shutdown() waits at most its 5 s for the export, the exit hook at most 3 s more.
    assert time.monotonic() - started < 30


# -- the reference text ----------------------------------------------------------------------------


def _reference_blocks() -> list[str]:
    text = SPEC.read_text()
    return [block.strip("\n") for block in re.findall(r"```python\n(.*?)```", text, re.S)]


def _marked_block(stem: str) -> str:
    source = (EXAMPLES / f"{stem}.py").read_text()
    match = re.search(
        r"^[ ]*# --- reference example: .*?---\n(.*?)^[ ]*# --- end of reference example ---",
        source,
        re.S | re.M,
    )
    assert match, stem
    lines = [line for line in match.group(1).splitlines() if line.strip() not in {"# fmt: off", "# fmt: on"}]
    block = textwrap.dedent("\n".join(lines)).strip("\n")
    return block.replace("import hud_otel as hud_sdk", "import hud_sdk")


@pytest.mark.skipif(not SPEC.exists(), reason="the reference document is not beside this checkout")
def test_reference_examples_are_the_reference_text():
    """Each manual_*.py example holds one code example of hud-manual-flows.md verbatim (but for the
    import line), and every code example of that page but the signature listing has its file."""
    reference = _reference_blocks()
    ours = {stem: _marked_block(stem) for stem in STEMS if stem.startswith("manual_")}
    for stem, block in ours.items():
        assert block in reference, f"{stem} differs from the reference:\n{block}"
    runnable = [b for b in reference if "hud_sdk.sync_flow(\n    name: str" not in b]
    assert sorted(runnable) == sorted(ours.values())
