"""``hud-otel``: a local flow viewer with an embedded OTLP receiver.

Subcommands:

- ``hud-otel serve``: receive OTLP (gRPC and HTTP) and show the Custom Flows and Queues views live
  until Ctrl-C, then print them once more. The HTTP port also answers ``GET /api/view`` (the view as
  JSON), ``GET /api/flows/<name>`` (one flow's recent invocations) and ``GET /api/charts/<name>``
  (its chart data). A web page with the same views and charts is served on loopback on its own port
  (``--web-port``, 4319 by default; ``--no-web`` to turn it off), see :mod:`hud_otel._web`.
- ``hud-otel show NAME``: print the recent invocations of one flow from a running ``serve``.
- ``hud-otel demo``: run the project's ``examples/`` against an in-process receiver and print the
  views; with ``--web``, then serve the web page of the result until Ctrl-C.

With ``--json``, ``serve`` writes JSON Lines to stdout: first
``{"event": "listening", "grpc_endpoint": ..., "http_endpoint": ..., "grpc_port": ...,
"http_port": ..., "web_url": ... or null, "web_port": ... or null}``, then, once stopped, the view
(see :mod:`hud_otel._view` for its schema). ``demo --json`` writes the view with an extra
``"examples"`` list (then, with ``--web``, a line ``{"event": "web", "web_url": ..., "web_port":
...}``); ``show --json`` the detail view.

Example::

    $ hud-otel serve &
    $ OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python my_job.py
    $ hud-otel show nightly-report
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import ipaddress
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

if TYPE_CHECKING:
    from rich.console import Console

    from hud_otel._receiver import OtlpReceiver
    from hud_otel._view import FlowView, View
    from hud_otel._web import WebServer

# The viewer is an optional extra of the package: its modules are imported by the commands, so
# that without them `hud-otel` can still say what to install instead of failing on import.
_VIEWER_MODULES = ("rich", "grpc", "google.rpc", "opentelemetry.proto")

__all__ = ["main"]

_DEFAULT_HOST = "127.0.0.1"
_DEMO_RUN_NAME = "hud_otel_demo"
_DEMO_SERVICE = "hud-otel-demo"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``hud-otel`` command line; returns the process exit code.

    >>> main(["demo", "--json"])  # doctest: +SKIP
    0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    missing = _missing_modules()
    if missing:
        print(
            f"hud-otel: missing {', '.join(missing)}; install the viewer: pip install 'hud-otel[viewer]'",
            file=sys.stderr,
        )
        return 1
    code: int = args.run(args)
    return code


def _missing_modules() -> List[str]:
    missing = []
    for name in _VIEWER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # the parent package itself is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port number (0 for any free port)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hud-otel",
        description="A local viewer of hud_otel flows, with an embedded OTLP receiver.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="receive OTLP and show the Custom Flows and Queues views live",
        description="Receive OTLP over gRPC and HTTP and show flows live until Ctrl-C.",
    )
    serve.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default {_DEFAULT_HOST}; anything else only when given)",
    )
    serve.add_argument("--grpc-port", type=_port, default=4317, help="gRPC port, 0 = any free")
    serve.add_argument("--http-port", type=_port, default=4318, help="HTTP port, 0 = any free")
    serve.add_argument("--json", action="store_true", help="JSON Lines output instead of tables")
    serve.add_argument("--refresh", type=_positive_float, default=1.0, help="seconds between live refreshes")
    _web_arguments(serve)
    serve.add_argument("--no-web", action="store_true", help="do not serve the web page")
    serve.set_defaults(run=_serve)

    show = commands.add_parser(
        "show",
        help="print the recent invocations of one flow from a running serve",
        description="Fetch one flow's recent invocations from a running `hud-otel serve`.",
    )
    show.add_argument("name", metavar="NAME", help="the flow name")
    show.add_argument(
        "--endpoint",
        default="http://127.0.0.1:4318",
        help="the HTTP endpoint of `hud-otel serve` (default http://127.0.0.1:4318)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(run=_show)

    demo = commands.add_parser(
        "demo",
        help="run examples/ against an in-process receiver and print the views",
        description="Run every examples/*.py main() with hud_otel exporting to an in-process "
        "receiver on free loopback ports, then print the views.",
    )
    demo.add_argument("--json", action="store_true", help="print JSON instead of tables")
    demo.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="directory of examples (default ./examples, else the one beside the package)",
    )
    demo.add_argument("--web", action="store_true", help="then serve the web page of the result until Ctrl-C")
    _web_arguments(demo)
    demo.set_defaults(run=_demo)
    return parser


def _web_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--web-port",
        type=_port,
        default=None,
        help="port of the web page on 127.0.0.1, 0 = any free (default 4319, or a free one if taken)",
    )


# --------------------------------------------------------------------------------------------------
# web page


def _start_web(view: FlowView, port: Optional[int]) -> WebServer:
    """Start the web page; raises ``OSError`` when an explicitly asked port is taken."""
    from hud_otel._web import DEFAULT_WEB_PORT, WebServer

    if port is not None:
        return WebServer(view, port).start()
    try:
        return WebServer(view, DEFAULT_WEB_PORT).start()
    except OSError:
        # The default is a convenience: a second serve (or a test run beside one) still gets a page.
        return WebServer(view, 0).start()


# --------------------------------------------------------------------------------------------------
# serve


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``stop.set()`` for the duration, so the final view still prints."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from hud_otel._receiver import OtlpReceiver
    from hud_otel._view import FlowView, render_view

    out = Console(soft_wrap=args.json)
    err = Console(stderr=True)
    host = args.host if args.host is not None else _DEFAULT_HOST
    view = FlowView()
    receiver = OtlpReceiver(host=host, grpc_port=args.grpc_port, http_port=args.http_port)
    # Attached before start so not even the first batch can slip past the view.
    view.attach(receiver)
    receiver.add_json_route("/api/view", lambda _rest: view.snapshot())
    receiver.add_json_route("/api/flows/", view.detail)
    receiver.add_json_route("/api/charts/", view.charts)
    try:
        receiver.start()
    except OSError as exc:
        err.print(f"[red]hud-otel: cannot listen on {host}: {exc}[/red]")
        return 1
    web: Optional[WebServer] = None
    if not args.no_web:
        try:
            web = _start_web(view, args.web_port)
        except OSError as exc:
            receiver.stop()
            err.print(f"[red]hud-otel: cannot serve the web page on 127.0.0.1: {exc}[/red]")
            return 1

    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            if args.json:
                listening = {
                    "event": "listening",
                    "grpc_endpoint": receiver.grpc_endpoint,
                    "http_endpoint": receiver.http_endpoint,
                    "grpc_port": receiver.grpc_port,
                    "http_port": receiver.http_port,
                    "web_url": web.url if web is not None else None,
                    "web_port": web.port if web is not None else None,
                }
                print(json.dumps(listening), flush=True)
            else:
                out.print(
                    f"hud-otel: receiving OTLP on gRPC [bold]{receiver.grpc_endpoint}[/bold] and "
                    f"HTTP [bold]{receiver.http_endpoint}[/bold] (Ctrl-C to stop)"
                )
                if web is not None:
                    out.print(f"hud-otel: web page at [bold]{web.url}[/bold]")
            if not _is_loopback(host):
                err.print(
                    f"[yellow]hud-otel: listening on {host}, reachable from other machines; "
                    "anything that can reach it can send data.[/yellow]"
                )
            if not args.json and out.is_terminal:
                with Live(render_view(view.snapshot()), console=out, auto_refresh=False) as live:
                    while not stop.wait(args.refresh):
                        live.update(render_view(view.snapshot()), refresh=True)
            else:
                # Short waits so the signal handler gets to run promptly on every platform.
                while not stop.wait(0.2):
                    pass
    finally:
        if web is not None:
            web.stop()
        receiver.stop()

    final = view.snapshot()
    if args.json:
        print(json.dumps(final), flush=True)
    else:
        out.print(render_view(final))
    return 0


# --------------------------------------------------------------------------------------------------
# show


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hud_otel._view import render_detail

    err = Console(stderr=True)
    base = args.endpoint.rstrip("/")
    url = f"{base}/api/flows/{urllib.parse.quote(args.name, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            detail = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            err.print(f"hud-otel: no flow named {args.name!r} has reached {base} yet")
        else:
            err.print(f"hud-otel: {base} answered HTTP {exc.code}")
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        err.print(f"hud-otel: cannot reach `hud-otel serve` at {base}: {exc}")
        return 1
    if args.json:
        print(json.dumps(detail, indent=2))
    else:
        Console().print(render_detail(detail))
    return 0


# --------------------------------------------------------------------------------------------------
# demo


def _examples_dir(explicit: Optional[Path]) -> Optional[Path]:
    if explicit is not None:
        return explicit
    candidates = [Path.cwd() / "examples"]
    import hud_otel

    # An editable install or a checkout: examples/ sits beside the package directory.
    candidates.append(Path(hud_otel.__file__).resolve().parent.parent / "examples")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


# The test suite's switch that re-raises hud_otel's internal errors; it changes no destination.
_KEPT_VARIABLES = frozenset({"HUD_OTEL_RAISE_INTERNAL"})


@contextlib.contextmanager
def _without_export_settings() -> Iterator[Dict[str, str]]:
    """Hide ``HUD_OTEL_*`` and ``OTEL_*`` variables while the demo runs: it must send to its own
    receiver only, whatever the shell points at (a real Hud endpoint and its key included)."""
    hidden = {
        name: value
        for name, value in os.environ.items()
        if (name.startswith("HUD_OTEL_") or name.startswith("OTEL_")) and name not in _KEPT_VARIABLES
    }
    for name in hidden:
        del os.environ[name]
    try:
        yield hidden
    finally:
        os.environ.update(hidden)


def _run_example(path: Path) -> Dict[str, Any]:
    """Run one example's ``main()``; report what happened instead of raising."""
    started = time.perf_counter()
    result: Dict[str, Any] = {"example": path.name, "ok": True, "error": None}
    sys.path.insert(0, str(path.parent))
    try:
        namespace = runpy.run_path(str(path), run_name=_DEMO_RUN_NAME)
        entry = namespace.get("main")
        if callable(entry):
            outcome = entry()
            if inspect.isawaitable(outcome):
                asyncio.run(_await(outcome))
    except (Exception, SystemExit) as exc:
        # SystemExit too: one example calling sys.exit() must not end the whole demo.
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path.parent))
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _demo(args: argparse.Namespace) -> int:
    # The SDK and exporters are imported here, where providers are built, not by the library.
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    import hud_otel
    from hud_otel._receiver import OtlpReceiver
    from hud_otel._view import FlowView

    class _EndedSpans(SpanProcessor):
        """Counts sampled spans as they end, to know how many the receiver should get."""

        def __init__(self) -> None:
            self.count = 0
            self._lock = threading.Lock()

        def on_end(self, span: ReadableSpan) -> None:
            if span.context is not None and span.context.trace_flags.sampled:
                with self._lock:
                    self.count += 1

    out = Console(soft_wrap=args.json)
    err = Console(stderr=True)
    examples_dir = _examples_dir(args.examples)
    examples = (
        sorted(p for p in examples_dir.glob("*.py") if not p.name.startswith("_"))
        if examples_dir is not None
        else []
    )
    if not examples:
        err.print("[yellow]hud-otel demo: no examples/*.py found; the views will be empty[/yellow]")

    results: List[Dict[str, Any]] = []
    view = FlowView()
    with _without_export_settings() as hidden, OtlpReceiver() as receiver:
        if hidden:
            err.print(f"hud-otel demo: ignoring {', '.join(sorted(hidden))} (the demo exports locally)")
        view.attach(receiver)
        resource = Resource.create({"service.name": _DEMO_SERVICE})
        ended = _EndedSpans()
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(ended)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True),
                schedule_delay_millis=200,
            )
        )
        # A long interval: the one export that matters is the force_flush at the end.
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True),
            export_interval_millis=3_600_000,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        # Global too, so spans the examples start with the plain OpenTelemetry API (an HTTP
        # server span around a flow, say) are real and reach the same receiver.
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        hud_otel.register(tracer_provider=tracer_provider, meter_provider=meter_provider)
        try:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                console=err,
                transient=True,
            ) as progress:
                task = progress.add_task("Running examples", total=len(examples))
                for path in examples:
                    progress.update(task, description=f"Running examples/{path.name}")
                    # Examples print; with --json stdout carries only the JSON document.
                    target = sys.stderr if args.json else sys.stdout
                    with contextlib.redirect_stdout(target):
                        results.append(_run_example(path))
                    progress.advance(task)

            with err.status("Flushing flows and metrics to the receiver"):
                hud_otel.flush(10.0)
                tracer_provider.force_flush(10_000)
                meter_provider.force_flush(10_000)
                _wait_for_total(receiver, ended.count, timeout=10.0)
                if examples:
                    # The skipped counter only exists once something was skipped; a short wait.
                    with contextlib.suppress(TimeoutError):
                        receiver.wait_for_metrics(timeout=2.0)
        finally:
            hud_otel.shutdown()
            tracer_provider.shutdown()
            meter_provider.shutdown()

    snapshot = view.snapshot()
    if args.json:
        payload: Dict[str, Any] = dict(snapshot)
        payload["examples"] = [{k: v for k, v in r.items() if k != "traceback"} for r in results]
        print(json.dumps(payload), flush=True)
    else:
        _print_demo(out, err, examples_dir, results, snapshot)
    if args.web:
        return _demo_web(args, view, out, err)
    return 0


def _demo_web(args: argparse.Namespace, view: FlowView, out: Console, err: Console) -> int:
    """Keep the demo's view up as a web page until Ctrl-C (or SIGTERM)."""
    try:
        web = _start_web(view, args.web_port)
    except OSError as exc:
        err.print(f"[red]hud-otel: cannot serve the web page on 127.0.0.1: {exc}[/red]")
        return 1
    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            if args.json:
                print(json.dumps({"event": "web", "web_url": web.url, "web_port": web.port}), flush=True)
            else:
                out.print(f"\nhud-otel demo: the flows above are at [bold]{web.url}[/bold] (Ctrl-C to stop)")
            while not stop.wait(0.2):
                pass
    finally:
        web.stop()
    return 0


def _wait_for_total(receiver: OtlpReceiver, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while receiver.span_total < expected and time.monotonic() < deadline:
        time.sleep(0.02)


def _print_demo(
    out: Console,
    err: Console,
    examples_dir: Optional[Path],
    results: Sequence[Dict[str, Any]],
    snapshot: View,
) -> None:
    from hud_otel._view import render_view

    for result in results:
        if result["ok"]:
            out.print(f"[green]ok[/green]     examples/{result['example']} ({result['seconds']} s)")
        else:
            out.print(f"[red]failed[/red] examples/{result['example']}: {result['error']}")
            err.print(result.get("traceback", ""), markup=False, highlight=False)
    if examples_dir is not None:
        out.print()
    out.print(render_view(snapshot))
