"""OTLP export: the exporters, what hud_otel adds to the user's providers, and the bounded flush at exit.

Attach, never replace. With SDK providers already in place (the user's own pipeline), hud_otel only adds
to them: its span processor always, and for a separate Hud endpoint a batch processor that sends flows
(and the spans started inside them) there, plus a metric reader that sends hud_otel's own metrics there.
With no provider in place, hud_otel builds a tracer and a meter provider exporting to the resolved
endpoint and installs them globally, so the user's own spans take the same road.

Exports are batched, gzip-compressed, bounded (queue size, timeout), and made again in a forked child,
which must not share its parent's connection. Nothing here blocks the application: flush and shutdown
run on a helper thread that the caller waits for at most ``timeout_s``.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from . import _attributes as A
from ._config import PROTOCOL_GRPC, Settings
from ._guard import logger, warn_once
from ._state import STATE
from ._version import __version__

# Always sent, so that the gRPC exporter never falls back to OTEL_EXPORTER_OTLP_HEADERS (it reads them
# whenever it is given no headers at all); it also tells the backend which SDK sent the data.
SDK_HEADER = "x-hud-otel-sdk"
SDK_HEADER_VALUE = f"hud_otel/{__version__} python"

# What an HTTP request needs beyond the headers hud_otel chose.
_TRANSPORT_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "transfer-encoding",
        "user-agent",
    }
)
_DEFAULT_BATCH_SIZE = 512
_T = TypeVar("_T")


# -- exporters ----------------------------------------------------------------------------------------


def _headers(settings: Settings) -> dict[str, str]:
    headers = settings.export_headers()
    headers.setdefault(SDK_HEADER, SDK_HEADER_VALUE)
    return headers


def _pinned_session(headers: dict[str, str]) -> Any:
    """A ``requests`` session that sends the headers hud_otel chose and no other.

    The stock OTLP/HTTP exporters merge ``OTEL_EXPORTER_OTLP_*HEADERS`` into whatever headers they are
    given; those belong to the user's own pipeline and must not reach a separate endpoint.
    """
    import requests  # a dependency of the OTLP/HTTP exporter

    allowed = frozenset(name.lower() for name in headers) | _TRANSPORT_HEADERS

    class PinnedHeadersSession(requests.Session):
        def prepare_request(self, request: Any) -> Any:
            prepared = super().prepare_request(request)
            for name in [n for n in prepared.headers if n.lower() not in allowed]:
                del prepared.headers[name]
            return prepared

    return PinnedHeadersSession()


def make_span_exporter(settings: Settings) -> SpanExporter:
    """An OTLP span exporter to the resolved endpoint, over the resolved protocol, gzip-compressed."""
    exporter: SpanExporter = _otlp_exporter(settings, "traces")
    return exporter


def make_metric_exporter(settings: Settings) -> MetricExporter:
    """An OTLP metric exporter to the resolved endpoint, over the resolved protocol, gzip-compressed."""
    exporter: MetricExporter = _otlp_exporter(settings, "metrics")
    return exporter


def _otlp_exporter(settings: Settings, signal: str) -> Any:
    headers = _headers(settings)
    if settings.protocol == PROTOCOL_GRPC:
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc import metric_exporter, trace_exporter

        grpc_class = (
            trace_exporter.OTLPSpanExporter if signal == "traces" else metric_exporter.OTLPMetricExporter
        )
        return grpc_class(
            endpoint=settings.endpoint,
            insecure=settings.plaintext,
            headers=tuple(headers.items()),
            timeout=settings.export_timeout_s,
            compression=Compression.Gzip,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metric
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_trace

    http_class = http_trace.OTLPSpanExporter if signal == "traces" else http_metric.OTLPMetricExporter
    return http_class(
        endpoint=settings.signal_url(signal),
        headers=headers,
        timeout=settings.export_timeout_s,
        compression=HttpCompression.Gzip,
        session=_pinned_session(headers),
    )


class _PerProcess(Generic[_T]):
    """One exporter per process: made again on first use in a forked child, which must not share its
    parent's connection (a gRPC channel or a pooled HTTP socket)."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._pid = os.getpid()
        self._value = make()

    def get(self) -> _T:
        if self._pid != os.getpid():
            self._value = self._make()
            self._pid = os.getpid()
        return self._value

    def mine(self) -> Optional[_T]:
        """The exporter if this process made it: a child never closes the one its parent still uses."""
        return self._value if self._pid == os.getpid() else None


class ForkSafeSpanExporter(SpanExporter):
    """A span exporter that a forked child makes again for itself."""

    def __init__(self, make: Callable[[], SpanExporter]) -> None:
        self._inner = _PerProcess(make)
        self._abandoned = False

    def abandon(self) -> None:
        """Stop for good now, cutting short any export retrying against a backend that is not there."""
        self._abandoned = True
        inner = self._inner.mine()
        if inner is not None:
            inner.shutdown()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._abandoned:  # already said: nothing listens at the endpoint
            rt = STATE.runtime
            if rt is not None:
                rt.instruments.count_drop(A.DROP_EXPORT_FAILED, len(spans))
            return SpanExportResult.FAILURE
        try:
            result = self._inner.get().export(spans)
        except Exception:
            report_drop(A.DROP_EXPORT_FAILED, len(spans))
            raise
        if result is not SpanExportResult.SUCCESS:  # the exporter has retried as long as it may
            report_drop(A.DROP_EXPORT_FAILED, len(spans))
        return result

    def shutdown(self) -> None:
        inner = self._inner.mine()
        if inner is not None and not self._abandoned:
            inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class ForkSafeMetricExporter(MetricExporter):
    """A metric exporter that a forked child makes again for itself; with ``scope``, it sends that meter's
    metrics only (hud_otel's, from a reader added to the user's meter provider)."""

    def __init__(self, make: Callable[[], MetricExporter], scope: Optional[str] = None) -> None:
        self._inner = _PerProcess(make)
        self._scope = scope
        self._abandoned = False
        first = self._inner.get()
        super().__init__(
            preferred_temporality=getattr(first, "_preferred_temporality", None),
            preferred_aggregation=getattr(first, "_preferred_aggregation", None),
        )

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self._abandoned:
            return MetricExportResult.FAILURE
        if self._scope is not None:
            metrics_data = _only_scope(metrics_data, self._scope)
            if not metrics_data.resource_metrics:
                return MetricExportResult.SUCCESS
        return self._inner.get().export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def abandon(self) -> None:
        """Stop for good now, cutting short any export retrying against a backend that is not there."""
        self._abandoned = True
        inner = self._inner.mine()
        if inner is not None:
            inner.shutdown()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        inner = self._inner.mine()
        if inner is not None and not self._abandoned:
            inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _only_scope(data: MetricsData, scope: str) -> MetricsData:
    kept = []
    for rm in data.resource_metrics:
        scoped = [sm for sm in rm.scope_metrics if sm.scope.name == scope]
        if scoped:
            kept.append(ResourceMetrics(resource=rm.resource, scope_metrics=scoped, schema_url=rm.schema_url))
    return MetricsData(resource_metrics=kept)


class FlowExportProcessor(SpanProcessor):
    """Sends flows, and the spans started inside them, to a separate Hud endpoint.

    Added to the user's tracer provider next to their own processors; every other span is left to them.
    """

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner
        self._stopped = False

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes
        if not self._stopped and attrs and (A.FLOW_TYPE in attrs or A.FLOW_NAME in attrs):
            self._inner.on_end(span)

    def shutdown(self) -> None:
        # A span processor cannot be removed from a provider: once stopped, it lets spans pass by.
        self._stopped = True
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def report_drop(reason: str, spans: int) -> None:
    """Count spans the export could not deliver (``hud.export.dropped``) and say so once a process."""
    rt = STATE.runtime
    if rt is not None:
        rt.instruments.count_drop(reason, spans)
    warn_once(
        "export_dropped",
        "hud_otel: the backend is not taking spans (%s); they are dropped and counted in %s (said once; "
        "delivery resumes when the backend is back)",
        reason,
        A.METRIC_EXPORT_DROPPED,
    )


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, except that a span finding the queue full is dropped here: counted and
    reported once, where the SDK would build a log record for each one, a cost the application would pay
    on every flow while the backend is away."""

    def __init__(self, exporter: SpanExporter, max_queue_size: int, max_export_batch_size: int) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size)
        inner = getattr(self, "_batch_processor", self)  # SDK 1.33+; before, the processor itself
        queue = getattr(inner, "_queue", None)
        if queue is None:
            queue = getattr(inner, "queue", None)
        self._hud_queue: Optional[deque[Any]] = queue if isinstance(queue, deque) else None
        self._hud_capacity = max_queue_size

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._hud_queue
        if queue is not None and len(queue) >= self._hud_capacity:
            ctx = span.context
            if ctx is not None and ctx.trace_flags.sampled:
                # As the SDK does, the oldest span makes room: after an outage the newest data goes first.
                try:
                    queue.pop()
                except IndexError:  # the worker took it meanwhile
                    pass
                report_drop(A.DROP_QUEUE_FULL, 1)
        super().on_end(span)


def _span_batch(settings: Settings, exporters: list[Any]) -> BatchSpanProcessor:
    exporter = ForkSafeSpanExporter(lambda: make_span_exporter(settings))
    exporters.append(exporter)
    return CountingBatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=min(_DEFAULT_BATCH_SIZE, settings.max_queue_size),
    )


def _metric_reader(settings: Settings, exporters: list[Any], scope: Optional[str] = None) -> MetricReader:
    exporter = ForkSafeMetricExporter(lambda: make_metric_exporter(settings), scope)
    exporters.append(exporter)
    return PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=settings.metric_interval_s * 1000,
        export_timeout_millis=settings.export_timeout_s * 1000,
    )


# -- the pipeline -------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """The providers hud_otel records with, and the parts it owns and must flush and shut down."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    # Flushed by flush() and at exit: the providers in use, and our readers the providers do not know of.
    flushables: list[Any] = field(default_factory=list)
    # Shut down by shutdown() and at exit: what hud_otel built or added.
    closables: list[Any] = field(default_factory=list)
    exit_timeout_s: float = 3.0
    # The OTLP exporters hud_otel made, and where they send.
    exporters: list[Any] = field(default_factory=list)
    endpoint: Optional[str] = None

    def flush(self, timeout_s: float) -> bool:
        """Export what is pending; True if it all went within ``timeout_s``."""
        millis = max(1, int(timeout_s * 1000))
        # A list, not a generator: every part is flushed, even after one has failed.
        return run_bounded(
            lambda: all([bool(part.force_flush(millis)) for part in self.flushables]), timeout_s
        )

    def close(self, timeout_s: float) -> bool:
        """Flush, then shut down what hud_otel owns, all within ``timeout_s``; True if it finished."""
        millis = max(1, int(timeout_s * 1000))
        self._give_up_if_nothing_listens(timeout_s)

        def close_all() -> bool:
            for part in self.flushables:
                if part not in self.closables:
                    _quietly(part.force_flush, millis)
            for part in self.closables:
                _quietly(part.shutdown)
            return True

        return run_bounded(close_all, timeout_s)

    def _give_up_if_nothing_listens(self, timeout_s: float) -> None:
        """A script run with no collector would spend the whole exit timeout in export retries: when the
        endpoint refuses connections (or its host does not resolve), drop what is pending at once."""
        if not self.exporters or self.endpoint is None:
            return
        where = _refused(self.endpoint, min(0.5, timeout_s))
        if where is None:
            return
        logger.warning(
            "hud_otel: nothing accepts connections at %s; flows still pending at shutdown are dropped "
            "(counted in %s) instead of retrying for up to %.1f s",
            where,
            A.METRIC_EXPORT_DROPPED,
            timeout_s,
        )
        for exporter in self.exporters:
            _quietly(exporter.abandon)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _refused(endpoint: str, timeout_s: float) -> Optional[str]:
    """``host:port`` of ``endpoint`` if a TCP connection to it is refused or its host does not resolve.

    A slow or silent host is not judged here (None): the bounded flush deals with it.
    """
    url = endpoint if "://" in endpoint else "//" + endpoint
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 4317)
    except ValueError:
        return None
    if not host:
        return None
    where = f"{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=max(timeout_s, 0.01)).close()
    except (ConnectionRefusedError, socket.gaierror):
        return where
    except OSError:
        return None
    return None


def _quietly(call: Callable[..., Any], *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # an exporter or a provider that fails on the way out is not the user's problem
        logger.debug("hud_otel: a part failed to flush or shut down", exc_info=True)


def run_bounded(call: Callable[[], bool], timeout_s: float) -> bool:
    """Run ``call`` on a helper thread and wait for it at most ``timeout_s``.

    The SDK's batch processors do not bound ``force_flush`` by its timeout (an export retries for as long
    as the exporter's own timeout allows), so the wait is bounded here. A call still running afterwards
    goes on in the background on a daemon thread, which never holds the interpreter's exit.
    """
    outcome: list[bool] = []

    def target() -> None:
        try:
            outcome.append(bool(call()))
        except Exception:
            logger.debug("hud_otel: flush failed", exc_info=True)
            outcome.append(False)

    worker = threading.Thread(target=target, name="hud-otel-flush", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(outcome and outcome[0])


def build(
    settings: Settings,
    tracer_provider: Optional[TracerProvider],
    meter_provider: Optional[MeterProvider],
) -> Pipeline:
    """Attach to the given or global SDK providers, or build and install them; never replace one."""
    export = settings.refused is None
    separate = settings.hud_endpoint and export
    tp = tracer_provider if tracer_provider is not None else _global_sdk_tracer_provider()
    mp = meter_provider if meter_provider is not None else _global_sdk_meter_provider()
    resource = _resource(settings) if tp is None or mp is None else None
    closables: list[Any] = []
    exporters: list[Any] = []

    if tp is None:
        tp = TracerProvider(resource=resource, shutdown_on_exit=False)
        if export:
            tp.add_span_processor(_span_batch(settings, exporters))
        _install_tracer_provider(tp)
        closables.append(tp)
    elif separate:
        processor = FlowExportProcessor(_span_batch(settings, exporters))
        tp.add_span_processor(processor)
        closables.append(processor)
    elif settings.api_key and export:
        warn_once(
            "api_key_unused",
            "hud_otel: an API key is set but flows go through your own tracer provider's exporters; "
            "set endpoint= (or HUD_OTEL_ENDPOINT) to send them to Hud with it",
        )

    flushables: list[Any] = [tp, mp]
    if mp is None:
        mp = MeterProvider(
            metric_readers=[_metric_reader(settings, exporters)] if export else [],
            resource=resource,
            shutdown_on_exit=False,
        )
        _install_meter_provider(mp)
        flushables[1] = mp
        closables.append(mp)
    elif separate:
        reader = _metric_reader(settings, exporters, scope=A.METER_NAME)
        add = getattr(mp, "add_metric_reader", None)
        if add is not None:
            # Shut down, never removed: the SDK's remove_metric_reader drops the reader's last collection.
            add(reader)
            flushables.append(reader)
            closables.append(reader)
        else:
            # An SDK without add_metric_reader: hud_otel's metrics get a provider of their own, which
            # exports to the Hud endpoint only.
            mp = MeterProvider(metric_readers=[reader], resource=tp.resource, shutdown_on_exit=False)
            flushables.append(mp)
            closables.append(mp)
    return Pipeline(
        tracer_provider=tp,
        meter_provider=mp,
        flushables=flushables,
        closables=closables,
        exit_timeout_s=settings.exit_timeout_s,
        exporters=exporters,
        endpoint=settings.endpoint if exporters else None,
    )


def _resource(settings: Settings) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; an explicit service wins.
    return Resource.create({SERVICE_NAME: settings.service} if settings.service else {})


# Providers an earlier register() built and installed globally. Once shut down they stay global (the API
# sets a global provider once per process), so a later register() must not attach to them.
_BUILT: weakref.WeakSet[Any] = weakref.WeakSet()


def _global_sdk_tracer_provider() -> Optional[TracerProvider]:
    current = trace.get_tracer_provider()
    return current if isinstance(current, TracerProvider) and current not in _BUILT else None


def _global_sdk_meter_provider() -> Optional[MeterProvider]:
    current = metrics.get_meter_provider()
    return current if isinstance(current, MeterProvider) and current not in _BUILT else None


def _install_tracer_provider(provider: TracerProvider) -> None:
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    elif current not in _BUILT:
        # A non-SDK provider is global: it stays, and flows use hud_otel's own provider.
        logger.warning(
            "hud_otel: the global tracer provider is not the SDK's; flows use a provider of their own"
        )
    _BUILT.add(provider)


def _install_meter_provider(provider: MeterProvider) -> None:
    if metrics.get_meter_provider() not in _BUILT:
        # Were a non-SDK provider global, OpenTelemetry keeps it and says so; flow metrics then use
        # hud_otel's own provider.
        metrics.set_meter_provider(provider)
    _BUILT.add(provider)
