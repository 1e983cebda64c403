"""Zero-code OpenTelemetry: `opentelemetry-instrument python app.py` with environment variables only
registers hud_otel (its opentelemetry_post_instrument entry point) on the pipeline the distro built."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from hud_otel._receiver import OtlpReceiver
from tests.otlp import clean_environ

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")

APP = textwrap.dedent(
    """
    import hud_otel

    @hud_otel.sync_flow("zero-code-job")
    def job():
        hud_otel.set_context(source="env-only")

    job()
    """
)

pytestmark = pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrumentation not installed")


def instrument(app_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (app_dir / "app.py").write_text(APP, encoding="utf-8")
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, "app.py"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_hook_is_an_opentelemetry_post_instrument_entry_point():
    """Installed as a post-instrument hook: after the distro and configurator, never one of them."""
    (hook,) = [ep for ep in entry_points(group="opentelemetry_post_instrument") if ep.name == "hud_otel"]
    assert hook.value == "hud_otel._zero_code:register_from_environment"
    for group in ("opentelemetry_distro", "opentelemetry_configurator"):
        assert not [ep for ep in entry_points(group=group) if ep.value.startswith("hud_otel")]


def test_flows_go_through_the_pipeline_the_distro_configured(tmp_path):
    """OTEL_* variables alone: the distro's OTLP exporters carry the flow and hud_otel's metrics."""
    with OtlpReceiver() as rx:
        env = clean_environ(
            OTEL_SERVICE_NAME="zero-code-app",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_EXPORTER_OTLP_ENDPOINT=rx.grpc_endpoint,
        )
        done = instrument(tmp_path, env)
        assert done.returncode == 0, done.stderr
        (span,) = rx.wait_for_spans(1, timeout=10)
        assert (span.name, span.attributes["hud.context.source"], span.resource["service.name"]) == (
            "zero-code-job",
            "env-only",
            "zero-code-app",
        )
        assert rx.wait_for_metrics("hud.flow.duration", timeout=10)


def test_a_hud_endpoint_from_the_environment_receives_the_flows(tmp_path):
    """With the distro exporting nowhere, HUD_OTEL_ENDPOINT alone sends flows and their metrics to Hud."""
    with OtlpReceiver() as rx:
        env = clean_environ(
            OTEL_SERVICE_NAME="zero-code-app",
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            HUD_OTEL_ENDPOINT=rx.http_endpoint,
            HUD_OTEL_PROTOCOL="http/protobuf",
            HUD_OTEL_API_KEY="zero-code-key",
        )
        done = instrument(tmp_path, env)
        assert done.returncode == 0, done.stderr
        assert "zero-code-key" not in done.stderr + done.stdout
        (span,) = rx.wait_for_spans(1, timeout=10)
        assert span.name == "zero-code-job"
        assert rx.wait_for_metrics("hud.flow.duration", timeout=10)
        assert {r.headers["authorization"] for r in rx.requests()} == {"Bearer zero-code-key"}


@pytest.mark.parametrize(
    "switch",
    [{"HUD_OTEL_AUTO_REGISTER": "false"}, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask, hud_otel"}],
)
def test_the_hook_can_be_turned_off(tmp_path, switch):
    """HUD_OTEL_AUTO_REGISTER=false, or hud_otel among the disabled instrumentations: nothing registers."""
    with OtlpReceiver() as rx:
        env = clean_environ(
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            HUD_OTEL_ENDPOINT=rx.grpc_endpoint,
            **switch,
        )
        done = instrument(tmp_path, env)
        assert done.returncode == 0, done.stderr
        assert "before hud_otel.register()" in done.stderr
        assert rx.request_count() == 0


def test_a_register_call_in_code_under_the_hook_warns_that_the_environment_configures_it(tmp_path):
    """An app that also calls register() keeps the zero-code registration and is told where settings go."""
    with OtlpReceiver() as rx:
        (tmp_path / "app.py").write_text("import hud_otel\nhud_otel.register(service='ignored')\n")
        env = clean_environ(
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            HUD_OTEL_ENDPOINT=rx.grpc_endpoint,
        )
        done = subprocess.run(
            [str(INSTRUMENT), sys.executable, "app.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "already registered by opentelemetry-instrument" in done.stderr


def test_the_hook_never_raises_into_opentelemetry_instrument(monkeypatch, caplog, otel_globals):
    """Whatever goes wrong, the hook logs and returns: the instrumented application still starts."""
    from hud_otel import _zero_code

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(_zero_code, "register_with", broken)
    monkeypatch.delenv("HUD_OTEL_AUTO_REGISTER", raising=False)
    _zero_code.register_from_environment()
    assert "zero-code registration failed" in caplog.text
