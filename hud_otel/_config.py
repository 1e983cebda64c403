"""The settings of ``register()``: declared once as data, resolved in one fixed order.

Each setting is taken from the first source that has it: the explicit argument, then its ``HUD_OTEL_*``
environment variable, then the standard ``OTEL_*`` one, then the default. An invalid explicit argument
raises (``TypeError``/``ValueError``) at ``register()``; an unparsable environment value is logged and the
next source is used.

``OTEL_EXPORTER_OTLP_*`` variables describe the application's own collector pipeline. They fill in the
connection settings (protocol, headers, insecure) only when hud_otel exports to that same endpoint, never
when a separate Hud endpoint is configured (``endpoint=`` or ``HUD_OTEL_ENDPOINT``): the user's collector
credentials must not travel to another backend.

Nothing here ever logs or shows the API key or a header value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import _attributes as A
from ._guard import logger

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP = "http/protobuf"
_PROTOCOLS = {"grpc": PROTOCOL_GRPC, "http/protobuf": PROTOCOL_HTTP, "http": PROTOCOL_HTTP}
DEFAULT_ENDPOINTS = {PROTOCOL_GRPC: "http://localhost:4317", PROTOCOL_HTTP: "http://localhost:4318"}

API_KEY_HEADER = "authorization"
ARGUMENT = "argument"
DEFAULT = "default"


class _Invalid(ValueError):
    """A value that cannot be used; the message never contains the value itself."""


# -- parsers ------------------------------------------------------------------------------------------
# An explicit argument must already have the right type; a variable's text is converted first.


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a str, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise _Invalid("must not be empty")
    return text


def _protocol(value: object) -> str:
    text = _text(value).lower()
    if text not in _PROTOCOLS:
        raise _Invalid("must be 'grpc' or 'http/protobuf' (OTLP over HTTP/JSON is not supported)")
    return _PROTOCOLS[text]


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be a bool, not {type(value).__name__}")
    return value


def _read_flag(text: str) -> bool:
    word = text.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise _Invalid("must be true or false")


_MAX_COUNT = 2**31 - 1
_MAX_SECONDS = 86_400  # a day: no export, interval or exit wait is meant to be longer


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be an int, not {type(value).__name__}")
    if value < 1:
        raise _Invalid("must be at least 1")
    if value > _MAX_COUNT:
        raise _Invalid(f"must be at most {_MAX_COUNT}")
    return value


def _read_positive_int(text: str) -> int:
    try:
        return _positive_int(int(text.strip()))
    except ValueError:
        raise _Invalid("must be a whole number of at least 1") from None


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"must be a number of seconds, not {type(value).__name__}")
    if not 0 < value <= _MAX_SECONDS:
        # The bound also keeps huge values away from timers, gRPC deadlines and float conversion.
        raise _Invalid(f"must be a positive number of seconds, at most {_MAX_SECONDS}")
    return float(value)


def _read_seconds(text: str) -> float:
    try:
        return _seconds(float(text.strip()))
    except ValueError:
        raise _Invalid("must be a positive number of seconds") from None


def _read_milliseconds(text: str) -> float:
    try:
        return _seconds(float(text.strip()) / 1000.0)
    except ValueError:
        raise _Invalid("must be a positive number of milliseconds") from None


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"must be a mapping of str to str, not {type(value).__name__}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError("must be a mapping of str to str")
        if not key.strip():
            raise _Invalid("must not have an empty header name")
        out[key.strip().lower()] = item
    return out


def _read_headers(text: str) -> dict[str, str]:
    # Our own parser rather than opentelemetry.util.re.parse_env_headers: that one logs a malformed entry
    # whole, and an entry is often a credential.
    out: dict[str, str] = {}
    for number, entry in enumerate(text.split(","), 1):
        if not entry.strip():
            continue
        name, sep, item = entry.partition("=")
        name = urllib.parse.unquote(name).strip().lower()
        if not sep or not name:
            logger.warning("hud_otel: header entry %d is not name=value; it is ignored", number)
            continue
        out[name] = urllib.parse.unquote(item).strip()
    return out


def _endpoint(value: object) -> str:
    text = _text(value).rstrip("/")
    scheme, has_scheme, _ = text.partition("://")
    if has_scheme and scheme.lower() not in ("http", "https"):
        raise _Invalid("must be an http:// or https:// URL, or host:port for gRPC")
    if not endpoint_host(text):
        raise _Invalid("has no host")
    return text


def endpoint_host(endpoint: str) -> str:
    """The host of ``http(s)://host:port/...`` or of ``host:port``."""
    url = endpoint if "://" in endpoint else "//" + endpoint
    try:
        return urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine without a lookup: ``localhost`` or a loopback address."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the settings, as data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting of ``register()``: its variables, how each source is read, its default."""

    name: str
    hud_env: Optional[str]
    otel_env: Optional[str]
    default: Any
    # An explicit argument: checked, never converted.
    parse: Callable[[object], Any]
    # A variable's text (both variables unless ``otel_read`` is given): converted, then checked.
    read: Optional[Callable[[str], Any]] = None
    otel_read: Optional[Callable[[str], Any]] = None
    # The OTEL_* variable describes the user's own pipeline: not read for a separate Hud endpoint.
    pipeline_only: bool = False
    # Never show the value, not even a bad one in a warning.
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("service", "HUD_OTEL_SERVICE", "OTEL_SERVICE_NAME", None, _text),
    Option("api_key", "HUD_OTEL_API_KEY", None, None, _text, secret=True),
    Option("protocol", "HUD_OTEL_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", PROTOCOL_GRPC, _protocol,
           pipeline_only=True),
    Option("endpoint", "HUD_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", None, _endpoint),
    Option("headers", "HUD_OTEL_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", {}, _headers, _read_headers,
           pipeline_only=True, secret=True),
    Option("insecure", "HUD_OTEL_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE", False, _flag, _read_flag,
           pipeline_only=True),
    Option("max_flow_names", "HUD_OTEL_MAX_FLOW_NAMES", None, A.DEFAULT_MAX_FLOW_NAMES, _positive_int,
           _read_positive_int),
    Option("max_queue_size", "HUD_OTEL_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE", 2048, _positive_int,
           _read_positive_int),
    Option("export_timeout_s", "HUD_OTEL_EXPORT_TIMEOUT", None, 10.0, _seconds, _read_seconds),
    Option("metric_interval_s", "HUD_OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_INTERVAL", 60.0,
           _seconds, _read_seconds, otel_read=_read_milliseconds),
    Option("exit_timeout_s", "HUD_OTEL_EXIT_TIMEOUT", None, 3.0, _seconds, _read_seconds),
    Option("disabled", "HUD_OTEL_DISABLED", "OTEL_SDK_DISABLED", False, _flag, _read_flag),
)  # fmt: skip
OPTION_NAMES = tuple(option.name for option in OPTIONS)


@dataclass(frozen=True)
class Settings:
    """The resolved settings, and where each came from (``sources``)."""

    service: Optional[str]
    api_key: Optional[str]
    endpoint: str
    protocol: str
    headers: dict[str, str]
    insecure: bool
    max_flow_names: int
    max_queue_size: int
    export_timeout_s: float
    metric_interval_s: float
    exit_timeout_s: float
    disabled: bool
    sources: dict[str, str] = field(default_factory=dict)
    # Why nothing may be sent to the endpoint (set when that came from the environment only).
    refused: Optional[str] = None

    @property
    def hud_endpoint(self) -> bool:
        """Whether the endpoint is a separately configured Hud endpoint, not the user's own pipeline's."""
        return self.sources.get("endpoint") in (ARGUMENT, "HUD_OTEL_ENDPOINT")

    @property
    def plaintext(self) -> bool:
        """Whether exports to the endpoint travel unencrypted."""
        scheme = self.endpoint.partition("://")[0].lower() if "://" in self.endpoint else ""
        if scheme:
            return scheme == "http"
        return self.protocol == PROTOCOL_GRPC and self.insecure

    def export_headers(self) -> dict[str, str]:
        """The headers of every export request: ``headers`` plus the API key."""
        out = dict(self.headers)
        if self.api_key:
            out[API_KEY_HEADER] = f"Bearer {self.api_key}"
        return out

    def signal_url(self, signal: str) -> str:
        """Where one signal (``traces``/``metrics``) goes: the URL for HTTP, the endpoint for gRPC."""
        if self.protocol == PROTOCOL_HTTP:
            return f"{self.endpoint}/v1/{signal}"
        return self.endpoint

    def __repr__(self) -> str:
        shown = []
        for name in OPTION_NAMES:
            value = getattr(self, name)
            if name == "api_key" and value is not None:
                value = "<set>"
            elif name == "headers":
                value = sorted(value)  # names only
            shown.append(f"{name}={value!r}")
        return f"Settings({', '.join(shown)})"


def resolve(arguments: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Resolve every setting; ``arguments`` holds the explicit ones (``None`` means not given).

    Raises ``TypeError``/``ValueError`` for an invalid explicit argument, including an API key that
    would travel in plain text to a host that is not loopback without ``insecure=True``.
    """
    env = os.environ if environ is None else environ
    hud_endpoint = arguments.get("endpoint") is not None or bool(env.get("HUD_OTEL_ENDPOINT", "").strip())
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        # The protocol comes first: what an endpoint may look like, and its default, depend on it.
        parse = _endpoint_for(values["protocol"]) if option.name == "endpoint" else option.parse
        values[option.name], sources[option.name] = _resolve_one(
            option, parse, arguments.get(option.name), env, hud_endpoint
        )
    values["endpoint"] = values["endpoint"] or DEFAULT_ENDPOINTS[values["protocol"]]
    settings = Settings(**values, sources=sources)
    return _check_key_transport(settings)


def _resolve_one(
    option: Option,
    parse: Callable[[Any], Any],
    explicit: Any,
    env: Mapping[str, str],
    hud_endpoint: bool,
) -> tuple[Any, str]:
    if explicit is not None:
        try:
            return parse(explicit), ARGUMENT
        except _Invalid as exc:
            raise ValueError(f"hud_otel.register(): {option.name} {exc}") from None
        except TypeError as exc:
            raise TypeError(f"hud_otel.register(): {option.name} {exc}") from None
    read = option.read or parse
    candidates = [(option.hud_env, read)]
    if option.otel_env and not (option.pipeline_only and hud_endpoint):
        candidates.append((option.otel_env, option.otel_read or read))
    for variable, read_env in candidates:
        raw = env.get(variable) if variable else None
        if variable is None or raw is None or not raw.strip():
            continue
        try:
            return read_env(raw), variable
        except (TypeError, ValueError) as exc:
            shown = "" if option.secret else f" ({raw.strip()[:80]!r})"
            logger.warning("hud_otel: %s%s %s; it is ignored", variable, shown, exc)
    return option.default, DEFAULT


def _endpoint_for(protocol: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        endpoint = _endpoint(value)
        if protocol == PROTOCOL_HTTP and "://" not in endpoint:
            raise _Invalid("must be an http:// or https:// URL for OTLP over HTTP")
        return endpoint

    return parse


def _check_key_transport(settings: Settings) -> Settings:
    if not settings.api_key or not settings.plaintext or settings.insecure:
        return settings
    host = endpoint_host(settings.endpoint)
    if is_loopback(host):
        return settings
    reason = (
        f"the API key would travel in plain text to {host}; use an https:// endpoint, "
        "or insecure=True (HUD_OTEL_INSECURE=true) to allow it"
    )
    if ARGUMENT in (settings.sources.get("api_key"), settings.sources.get("endpoint")):
        raise ValueError(f"hud_otel.register(): {reason}")
    logger.error("hud_otel: nothing is exported: %s", reason)
    return dataclasses.replace(settings, refused=reason)
