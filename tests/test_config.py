"""register()'s settings (CONTRACT section 4): argument, then HUD_OTEL_*, then OTEL_*, then the default;
bad environment values warn and fall back, bad arguments raise, and the README documents every one."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import hud_otel
from hud_otel._config import OPTIONS, resolve
from hud_otel._state import STATE
from tests.otlp import clear_settings

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(autouse=True)
def _no_settings_in_the_environment(monkeypatch):
    """The developer's own OTEL_* and HUD_OTEL_* variables never leak into these tests."""
    clear_settings(monkeypatch)


def test_every_setting_resolves_argument_then_hud_variable_then_otel_variable_then_default():
    """For each setting with both variables, the argument wins over HUD_OTEL_*, which wins over OTEL_*."""
    samples = {
        "service": ("arg-svc", "hud-svc", "otel-svc"),
        "protocol": ("grpc", "http/protobuf", "grpc"),
        "insecure": (True, "false", "true"),
        "max_queue_size": (10, "20", "30"),
        "disabled": (False, "true", "false"),
    }
    for option in OPTIONS:
        if option.name not in samples:
            continue
        explicit, hud_value, otel_value = samples[option.name]
        env = {option.hud_env: hud_value, option.otel_env: otel_value}
        assert resolve({option.name: explicit}, env).sources[option.name] == "argument", option.name
        assert resolve({}, env).sources[option.name] == option.hud_env, option.name
        assert resolve({}, {option.otel_env: otel_value}).sources[option.name] == option.otel_env
        assert resolve({}, {}).sources[option.name] == "default", option.name


def test_defaults_are_a_local_collector_over_grpc_with_a_few_seconds_at_exit():
    """With nothing set: gRPC to localhost:4317, no key, no header, the documented limits."""
    settings = resolve({}, {})
    assert (settings.protocol, settings.endpoint, settings.api_key, settings.headers) == (
        "grpc",
        "http://localhost:4317",
        None,
        {},
    )
    assert (settings.max_flow_names, settings.max_queue_size) == (1000, 2048)
    assert (settings.export_timeout_s, settings.metric_interval_s, settings.exit_timeout_s) == (
        10.0,
        60.0,
        3.0,
    )
    assert settings.hud_endpoint is False
    assert resolve({"protocol": "http/protobuf"}, {}).endpoint == "http://localhost:4318"


def test_values_are_converted_from_their_variables():
    """Variables are text: numbers, flags, header lists and the OTEL_* millisecond interval are parsed."""
    settings = resolve(
        {},
        {
            "HUD_OTEL_HEADERS": "X-Team=core, x-trace-note=a%20b",
            "HUD_OTEL_INSECURE": "TRUE",
            "HUD_OTEL_MAX_FLOW_NAMES": "7",
            "HUD_OTEL_EXIT_TIMEOUT": "0.5",
            "OTEL_METRIC_EXPORT_INTERVAL": "1500",
            "HUD_OTEL_PROTOCOL": "http",
            "HUD_OTEL_ENDPOINT": "https://otlp.example.com:4318/",
        },
    )
    assert settings.headers == {"x-team": "core", "x-trace-note": "a b"}
    assert settings.insecure is True
    assert (settings.max_flow_names, settings.exit_timeout_s, settings.metric_interval_s) == (7, 0.5, 1.5)
    assert (settings.protocol, settings.endpoint) == ("http/protobuf", "https://otlp.example.com:4318")
    assert settings.signal_url("traces") == "https://otlp.example.com:4318/v1/traces"


def test_an_unparsable_variable_warns_and_falls_back_to_the_next_source(caplog):
    """A bad HUD_OTEL_* value is logged and the OTEL_* one (or the default) is used instead."""
    env = {
        "HUD_OTEL_MAX_QUEUE_SIZE": "lots",
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        "HUD_OTEL_PROTOCOL": "http/json",
        "HUD_OTEL_EXIT_TIMEOUT": "-1",
        "OTEL_SDK_DISABLED": "maybe",
    }
    with caplog.at_level(logging.WARNING, logger="hud_otel"):
        settings = resolve({}, env)
    assert settings.max_queue_size == 64 and settings.sources["max_queue_size"] == "OTEL_BSP_MAX_QUEUE_SIZE"
    assert settings.protocol == "grpc" and settings.sources["protocol"] == "default"
    assert settings.exit_timeout_s == 3.0
    assert settings.disabled is False
    logged = " ".join(r.getMessage() for r in caplog.records)
    for name in (
        "HUD_OTEL_MAX_QUEUE_SIZE",
        "HUD_OTEL_PROTOCOL",
        "HUD_OTEL_EXIT_TIMEOUT",
        "OTEL_SDK_DISABLED",
    ):
        assert name in logged


def test_an_endpoint_variable_that_does_not_fit_the_protocol_falls_back():
    """OTLP over HTTP needs a URL: a bare host:port in the variable is refused, the default used."""
    settings = resolve({}, {"HUD_OTEL_PROTOCOL": "http/protobuf", "HUD_OTEL_ENDPOINT": "collector:4318"})
    assert settings.endpoint == "http://localhost:4318"
    assert resolve({}, {"HUD_OTEL_ENDPOINT": "collector:4317"}).endpoint == "collector:4317"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"protocol": "http/json"}, ValueError),
        ({"protocol": 4317}, TypeError),
        ({"endpoint": "ftp://collector"}, ValueError),
        ({"endpoint": "collector:4318", "protocol": "http/protobuf"}, ValueError),
        ({"endpoint": ""}, ValueError),
        ({"headers": "a=b"}, TypeError),
        ({"headers": {"a": 1}}, TypeError),
        ({"insecure": "yes"}, TypeError),
        ({"max_flow_names": 0}, ValueError),
        ({"max_flow_names": True}, TypeError),
        ({"max_queue_size": 1.5}, TypeError),
        ({"exit_timeout_s": 0}, ValueError),
        ({"export_timeout_s": float("nan")}, ValueError),
        # Found by the fuzzer: an int too large for a float, and timeouts no timer or deadline can take.
        ({"export_timeout_s": 10**400}, ValueError),
        ({"exit_timeout_s": 1e300}, ValueError),
        ({"metric_interval_s": 86_401}, ValueError),
        ({"max_queue_size": 10**30}, ValueError),
        ({"api_key": 123}, TypeError),
        ({"service": "  "}, ValueError),
    ],
)
def test_an_invalid_explicit_argument_raises_at_register(otel_globals, arguments, error):
    """register() raises TypeError/ValueError for what the caller wrote wrong, and registers nothing."""
    with pytest.raises(error, match=r"hud_otel\.register"):
        hud_otel.register(**arguments)
    assert STATE.runtime is None


def test_a_string_header_variable_accepts_the_otel_form_but_a_string_argument_does_not():
    """HUD_OTEL_HEADERS takes name=value pairs; in code headers are a dict (a string there is a mistake)."""
    assert resolve({}, {"HUD_OTEL_HEADERS": "a=1,b=2"}).headers == {"a": "1", "b": "2"}
    with pytest.raises(TypeError):
        resolve({"headers": "a=1"}, {})


def test_a_malformed_header_variable_is_reported_without_its_content(caplog):
    """A header entry that is not name=value is skipped, and the log never shows it (it may be a secret)."""
    with caplog.at_level(logging.DEBUG):
        settings = resolve({}, {"HUD_OTEL_HEADERS": "authorization: Bearer s3cr3t-value,x-ok=1"})
    assert settings.headers == {"x-ok": "1"}
    assert "s3cr3t-value" not in caplog.text
    assert "header entry 1" in caplog.text


def test_user_pipeline_connection_variables_do_not_apply_to_a_separate_hud_endpoint():
    """OTEL_EXPORTER_OTLP_{HEADERS,PROTOCOL,INSECURE} describe the user's collector: used for it, not for Hud."""
    user = {
        "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-token=abc",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
    }
    to_collector = resolve({}, user)
    assert (to_collector.headers, to_collector.protocol, to_collector.insecure) == (
        {"x-collector-token": "abc"},
        "http/protobuf",
        True,
    )
    assert to_collector.endpoint == "http://collector:4318" and not to_collector.hud_endpoint
    to_hud = resolve({}, {**user, "HUD_OTEL_ENDPOINT": "https://hud.example.com:4317"})
    assert (to_hud.headers, to_hud.protocol, to_hud.insecure) == ({}, "grpc", False)
    assert to_hud.hud_endpoint
    assert resolve({"endpoint": "https://hud.example.com"}, user).headers == {}


def test_a_key_in_plain_text_to_a_remote_host_needs_insecure():
    """An API key over http:// (or insecure gRPC) to a host that is not loopback is refused unless insecure."""
    with pytest.raises(ValueError, match="plain text"):
        resolve({"api_key": "k", "endpoint": "http://hud.example.com:4317"}, {})
    with pytest.raises(ValueError, match="plain text"):
        resolve({"api_key": "k", "endpoint": "http://hud.example.com:4318", "protocol": "http/protobuf"}, {})
    assert (
        resolve({"api_key": "k", "endpoint": "http://hud.example.com:4317", "insecure": True}, {}).refused
        is None
    )
    consent = resolve({"api_key": "k", "endpoint": "hud.example.com:4317"}, {"HUD_OTEL_INSECURE": "true"})
    assert consent.plaintext and consent.refused is None  # gRPC without TLS, by the user's own choice
    assert resolve({"api_key": "k", "endpoint": "https://hud.example.com:4317"}, {}).refused is None
    assert resolve({"api_key": "k", "endpoint": "hud.example.com:4317"}, {}).refused is None  # gRPC over TLS
    for loopback in ("http://localhost:4317", "http://127.0.0.1:4317", "http://[::1]:4317"):
        assert resolve({"api_key": "k", "endpoint": loopback}, {}).refused is None


def test_a_key_in_plain_text_from_the_environment_only_refuses_to_export_and_says_so(caplog):
    """From variables alone nothing raises: export is refused and logged, without the key."""
    env = {"HUD_OTEL_API_KEY": "env-key-123", "HUD_OTEL_ENDPOINT": "http://hud.example.com:4317"}
    with caplog.at_level(logging.DEBUG):
        settings = resolve({}, env)
    assert settings.refused is not None and "plain text" in settings.refused
    assert "env-key-123" not in caplog.text and "plain text" in caplog.text


def test_settings_repr_shows_no_key_and_no_header_value():
    """The resolved settings can be logged: the key is "<set>" and headers show their names only."""
    settings = resolve({"api_key": "sk-live-42", "headers": {"x-tenant": "tenant-secret"}}, {})
    text = repr(settings)
    assert "sk-live-42" not in text and "tenant-secret" not in text
    assert "api_key='<set>'" in text and "x-tenant" in text


def test_the_readme_table_documents_every_setting():
    """One README table lists each setting with its HUD_OTEL_* and OTEL_* variables and its default."""
    text = README.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.MULTILINE)}
    for option in OPTIONS:
        assert option.name in rows, f"README has no row for {option.name}"
        row = rows[option.name]
        for variable in (option.hud_env, option.otel_env):
            if variable:
                assert f"`{variable}`" in row, f"README row of {option.name} lacks {variable}"
    assert re.search(r"^\| `tracer_provider`, `meter_provider` \|", text, re.MULTILINE)
