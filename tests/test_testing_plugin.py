"""``hud_otel.testing``: the pytest plugin as users get it, and what it reads back and puts back.

The entry point is proven twice, each time by running pytest in a new project in a temporary directory
outside this repository, with no conftest and no ``-p`` option, so that the ``hud_flows`` fixture can only
come from an installed distribution's ``pytest11`` entry point:

- with this virtualenv's interpreter, where hud_otel is installed (editable: the same
  ``entry_points.txt`` a wheel install writes) -- quick, and run with everything else;
- with a wheel built from this checkout and installed by pip into a brand-new virtualenv, which borrows
  the dependencies from this one (tests reach the network only on loopback, so nothing is downloaded).
  About 3 s, marked slow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider

import hud_otel as hud_sdk
from hud_otel._state import STATE
from hud_otel.testing import FinishedFlow, HudFlows, capture_flows
from tests.spans import whole

ROOT = Path(__file__).resolve().parent.parent

USER_TESTS = """
import hud_otel as hud_sdk
import pytest


@hud_sdk.sync_flow("nightly-report")
def generate_nightly_report(date):
    hud_sdk.set_context(date=date)
    if date == "never":
        raise LookupError(date)


def test_the_cron_job_is_a_flow(hud_flows, request):
    generate_nightly_report("2026-06-17")
    flow = hud_flows.flow("nightly-report")
    assert (flow.flow_type, flow.framework, flow.outcome, flow.error) == ("custom", "custom", "success", None)
    assert flow.context == {"date": "2026-06-17"}
    assert flow.span.parent is None
    assert request.config.pluginmanager.has_plugin("hud_otel")


def test_a_failing_run_has_its_error(hud_flows):
    with pytest.raises(LookupError):
        generate_nightly_report("never")
    assert hud_flows.flow("nightly-report").error == "LookupError"


@pytest.mark.hud_flows(max_flow_names=1)
def test_marker_options_reach_register(hud_flows):
    generate_nightly_report("2026-06-17")
    with hud_sdk.sync_flow("second-name"):
        pass
    assert hud_flows.names() == ["nightly-report"]
    assert hud_flows.skipped() == {"name_cap": 1}
"""


def _clean_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(key, None)
    return env


def test_the_installed_entry_point_declares_the_plugin():
    """The installed distribution declares ``hud_otel = hud_otel.testing`` in the ``pytest11`` group."""
    found = [ep for ep in metadata.entry_points(group="pytest11") if ep.name == "hud_otel"]
    assert [(ep.name, ep.value, ep.dist.name if ep.dist else None) for ep in found] == [
        ("hud_otel", "hud_otel.testing", "hud-otel")
    ]


def test_a_fresh_project_outside_the_repo_gets_the_fixture(tmp_path):
    """A new project with only a tests/ file (no conftest, no -p, --strict-markers on) uses the
    ``hud_flows`` fixture and its marker: three passing tests, the plugin loaded by its entry point."""
    project = _write_user_project(tmp_path)
    assert ROOT not in project.parents
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
        cwd=project,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout, result.stdout


def _write_user_project(root: Path) -> Path:
    project = root / "user-project"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    (project / "tests" / "test_jobs.py").write_text(USER_TESTS)
    return project


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_a_wheel_installed_in_a_new_virtualenv_gives_the_fixture(tmp_path):
    """The package built into a wheel and installed with pip into a brand-new virtualenv (no hud_otel
    in it but the wheel's) gives a fresh project the ``hud_flows`` fixture: three passing tests.

    The new virtualenv borrows the dependencies (OpenTelemetry, pytest) from this one, every entry but
    hud_otel's own, so that no download is needed."""
    pytest.importorskip("wheel", reason="the dev extra installs wheel, needed to build without isolation")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "hud_otel", source / "hud_otel", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", "./source"], tmp_path
    )
    (wheel,) = (tmp_path / "dist").glob("hud_otel-*.whl")

    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", "venv"], tmp_path)
    python = str(tmp_path / "venv" / "bin" / "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "hud_otel" not in entry.name:
            (borrowed / entry.name).symlink_to(entry)
    Path(purelib.stdout.strip(), "_borrowed.pth").write_text(
        f"import site; site.addsitedir({str(borrowed)!r})\n"
    )

    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path)
    where = _run([python, "-c", "import hud_otel; print(hud_otel.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv")

    project = _write_user_project(tmp_path)
    result = _run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"], project)
    assert "3 passed" in result.stdout, result.stdout


def test_capture_flows_works_without_pytest(tmp_path):
    """``capture_flows`` needs no pytest: a program where ``import pytest`` fails records a flow."""
    script = tmp_path / "no_pytest.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            sys.modules["pytest"] = None  # import pytest now raises ImportError
            import hud_otel as hud_sdk
            from hud_otel.testing import capture_flows

            with capture_flows() as flows:
                with hud_sdk.sync_flow("no-pytest"):
                    hud_sdk.set_context(ok=True)
            flow = flows.flow("no-pytest")
            assert (flow.outcome, flow.context) == ("success", {"ok": True}), flow
            assert not hasattr(sys.modules["hud_otel.testing"], "hud_flows")
            print("captured", flow.name)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "captured no-pytest"


def test_a_queue_flow_reads_back_as_plain_data(hud_flows):
    """Every field of FinishedFlow for a failed queue flow, and its span whole."""
    enqueued = datetime.now(timezone.utc) - timedelta(seconds=2)
    with pytest.raises(KeyError):
        with hud_sdk.sync_flow(
            "orders", flow_type=hud_sdk.FlowType.QUEUE, framework="sqs", enqueued_at=enqueued, message_count=3
        ):
            hud_sdk.set_context(order_id="o-1", attempts=2)
            hud_sdk.set_failure("PaymentDeclined", reason="card expired")
            raise KeyError("card")
    flow = hud_flows.flow("orders")
    assert isinstance(flow, FinishedFlow)
    assert flow.e2e_duration_ms is not None and flow.e2e_duration_ms >= 2000
    assert 0 <= flow.duration_s < flow.e2e_duration_ms / 1000
    assert flow == FinishedFlow(
        name="orders",
        flow_type="queue",
        framework="sqs",
        outcome="failure",
        error="PaymentDeclined",
        reason="card expired",
        duration_s=flow.duration_s,
        context={"order_id": "o-1", "attempts": 2, "reason": "card expired"},
        messaging_system="aws_sqs",
        message_count=3,
        enqueued_at=enqueued,
        e2e_duration_ms=flow.e2e_duration_ms,
        span=flow.span,
    )
    assert flow.attributes == dict(flow.span.attributes or {})
    span = whole(flow.span)
    assert span == {
        "name": "process orders",
        "kind": "CONSUMER",
        "parent": None,
        "attributes": {
            "hud.flow.name": "orders",
            "hud.flow_type": "queue",
            "hud.framework": "sqs",
            "hud.flow.outcome": "failure",
            "hud.flow.error": "PaymentDeclined",
            "error.type": "PaymentDeclined",
            "messaging.system": "aws_sqs",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "orders",
            "messaging.batch.message_count": 3,
            "hud.queue.message_count": 3,
            "hud.queue.enqueued_at": enqueued.isoformat().replace("+00:00", "Z"),
            "hud.context.order_id": "o-1",
            "hud.context.attempts": 2,
            "hud.context.reason": "card expired",
        },
        "status": ("ERROR", "card expired"),
        "links": [],
        "events": ["exception"],
    }


def test_find_helpers(hud_flows):
    """flows() filters by name and outcome, flow() wants exactly one, names() and spans_in() and
    skipped() report what happened; clear() forgets the spans."""
    tracer = hud_flows.tracer_provider.get_tracer("user-code")
    for order in ("a", "b"):
        with hud_sdk.sync_flow("orders"):
            with tracer.start_as_current_span(f"SELECT {order}"):
                pass
            if order == "b":
                hud_sdk.set_failure("Rejected")
    with hud_sdk.sync_flow("report"), hud_sdk.sync_flow("nested"):
        pass

    assert hud_flows.names() == ["orders", "report"]
    assert [f.outcome for f in hud_flows.flows("orders")] == ["success", "failure"]
    assert [f.error for f in hud_flows.flows(outcome="failure")] == ["Rejected"]
    assert hud_flows.flow("report").outcome == "success"
    with pytest.raises(AssertionError, match="expected one flow named 'orders', found 2"):
        hud_flows.flow("orders")
    with pytest.raises(AssertionError, match="found 0"):
        hud_flows.flow("missing")
    first = hud_flows.flows("orders")[0]
    inside = hud_flows.spans_in(first)
    assert [whole(s) for s in inside] == [
        {
            "name": "SELECT a",
            "kind": "INTERNAL",
            "parent": format(first.span.context.span_id, "016x"),
            "attributes": {"hud.flow.name": "orders"},
            "status": ("UNSET", None),
            "links": [],
            "events": [],
        }
    ]
    assert hud_flows.skipped() == {"nested": 1}
    assert "orders" in repr(hud_flows)
    hud_flows.clear()
    assert hud_flows.flows() == []


def test_capture_flows_puts_an_earlier_register_back():
    """An application registered before the capture gets its registration back afterwards, and flows
    made during the capture went to the capture only."""
    outer = TracerProvider()
    hud_sdk.register(tracer_provider=outer)
    before = STATE.runtime
    with capture_flows() as flows:
        assert STATE.runtime is not before
        with hud_sdk.sync_flow("inside"):
            pass
    assert STATE.runtime is before
    assert flows.names() == ["inside"]


def test_capture_flows_gives_back_the_warnings_state():
    """Warnings given inside the capture are given again later (and those from before stay given)."""
    from hud_otel import _guard

    with capture_flows():
        hud_sdk.set_context(x=1)  # outside any flow: one warning
        assert "set_context_outside" in _guard._warned
    assert "set_context_outside" not in _guard._warned


@pytest.mark.usefixtures("otel_globals")
def test_global_providers_are_swapped_in_and_put_back():
    """With global_providers=True the capture's providers are OpenTelemetry's global ones for the block,
    and the previous global providers are back afterwards."""
    mine = TracerProvider()
    trace.set_tracer_provider(mine)
    previous_meter_provider = metrics.get_meter_provider()
    with capture_flows(global_providers=True) as flows:
        assert trace.get_tracer_provider() is flows.tracer_provider
        assert metrics.get_meter_provider() is flows.meter_provider
        with trace.get_tracer("server").start_as_current_span("GET /", kind=trace.SpanKind.SERVER):
            with hud_sdk.sync_flow("inside-request"):
                pass
    assert trace.get_tracer_provider() is mine
    assert metrics.get_meter_provider() is previous_meter_provider
    assert flows.flows() == []
    assert flows.skipped() == {"in_request": 1}


def test_register_arguments_are_checked():
    """A bad register() keyword raises at the capture, as register() does, and leaves nothing behind."""
    with pytest.raises(ValueError), capture_flows(max_flow_names=0):
        pass
    assert STATE.runtime is None
    assert isinstance(HudFlows().tracer_provider, TracerProvider)
