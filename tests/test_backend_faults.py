"""Backend faults, with the real OTLP exporters against loopback servers these tests start.

Four faults, over gRPC and HTTP/protobuf: the connection is refused; the server accepts and never
answers; it answers UNAVAILABLE / HTTP 503 for a while, then recovers; it answers slowly. In each, no
exception reaches the application, a flow costs at most 1.2x what it costs with a healthy backend, the
memory held stays bounded by the export queue, what is dropped is counted and reported once, and flows
made after the backend is back are delivered.

Cost is compared, never timed absolutely: rounds alternate a healthy receiver and the fault, and each
side keeps its best batch of flows. The cost is the CPU time of the application's thread (what a flow
takes from it, whatever else the loaded machine runs); the wall time, compared more loosely, shows
that no flow ever waits on the backend. hud_otel runs on SDK providers of the application's own (so each
round is a fresh registration), exporting flows to the endpoint under test.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import selectors
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import hud_otel as hud
from hud_otel import _attributes as A
from hud_otel._receiver import OtlpReceiver
from hud_otel._state import STATE
from tests.otlp import clear_settings, free_port

PROTOCOLS = ["grpc", "http/protobuf"]
QUEUE = 256  # max_queue_size in every test: what bounds the memory held while the backend is away
ROUNDS = 7
FLOWS_PER_BATCH = 200
WARM_UP = 50
COST_RATIO = 1.2


@pytest.fixture(autouse=True)
def _clean(monkeypatch, otel_globals):
    """No setting from the developer's environment; fresh OpenTelemetry globals, restored afterwards."""
    clear_settings(monkeypatch)
    yield
    hud.shutdown(1.0)


class Blackhole:
    """A loopback TCP server that accepts every connection, reads what comes, and never answers."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                if sock is self._listener:
                    conn, _ = self._listener.accept()
                    conn.setblocking(False)
                    conns.append(conn)
                    self.accepted += 1
                    self._selector.register(conn, selectors.EVENT_READ)
                else:
                    try:
                        data = sock.recv(65536)  # type: ignore[union-attr]
                    except OSError:
                        data = b""
                    if not data:
                        self._selector.unregister(sock)
                        sock.close()  # type: ignore[union-attr]
        for conn in conns:
            conn.close()
        self._listener.close()
        self._selector.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def receiver_on(protocol: str, port: int) -> OtlpReceiver:
    """A receiver serving ``protocol`` on ``port`` (0: a free one)."""
    if protocol == "grpc":
        return OtlpReceiver(grpc_port=port, http_port=None).start()
    return OtlpReceiver(grpc_port=None, http_port=port).start()


def port_of(rx: OtlpReceiver, protocol: str) -> int:
    port = rx.grpc_port if protocol == "grpc" else rx.http_port
    assert port is not None
    return port


@contextlib.contextmanager
def registered(protocol: str, port: int, shutdown_s: float = 0.2) -> Iterator[None]:
    """hud_otel exporting to ``127.0.0.1:port`` from fresh SDK providers of the application's own."""
    tracer_provider, meter_provider = TracerProvider(), MeterProvider()
    hud.register(
        endpoint=f"http://127.0.0.1:{port}",
        protocol=protocol,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        max_queue_size=QUEUE,
        export_timeout_s=2.0,
        metric_interval_s=0.5,
        exit_timeout_s=1.0,
    )
    runtime = STATE.runtime
    try:
        yield
    finally:
        if STATE.runtime is runtime:  # never another test's (or round's) registration
            hud.shutdown(shutdown_s)


def run_flows(n: int, label: str = "load") -> None:
    for i in range(n):
        with hud.sync_flow(label):
            hud.set_context(i=i, tenant="acme")


def batch_cost(n: int = FLOWS_PER_BATCH) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) a flow costs, over a batch of ``n``.

    The cyclic garbage collector is paused for the batch on both sides alike: a full collection landing
    in one short batch and not in another would measure the heap, not the flows."""
    gc.collect()
    gc.disable()
    try:
        cpu, wall = time.thread_time(), time.perf_counter()
        run_flows(n)
        return (time.thread_time() - cpu) / n, (time.perf_counter() - wall) / n
    finally:
        gc.enable()


def memory_growth(n: int) -> int:
    """Bytes allocated and still held after ``n`` more flows, once ``n`` flows have filled every buffer
    (Python allocations, traced). Bounded memory does not grow with the flows. Left out: what the loopback
    receiver in this process holds, and the log records the test's log capture keeps."""
    gc.collect()
    tracemalloc.start(12)
    try:
        run_flows(n, "memory")
        gc.collect()
        before = tracemalloc.take_snapshot()
        run_flows(n, "memory")
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Only what the application's thread allocated (the flows and their queued spans): the exporters'
    # threads, of this registration and of earlier ones still retrying, hold transient requests.
    not_the_test = [
        tracemalloc.Filter(False, "*_receiver.py", all_frames=True),
        tracemalloc.Filter(False, logging.__file__, all_frames=True),
        tracemalloc.Filter(False, threading.__file__, all_frames=True),
    ]
    diff = after.filter_traces(not_the_test).compare_to(before.filter_traces(not_the_test), "filename")
    return sum(stat.size_diff for stat in diff)


def drop_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    """hud_otel's reports of the backend not taking spans (the one warning a process gets)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hud_otel" and "not taking spans" in r.getMessage()
    ]


class Fault:
    """What every fault test checks, while the fault lasts and after it ends.

    Costs are measured side by side: rounds alternate a healthy receiver and the faulty endpoint, each
    a fresh registration, and each side keeps its best batch (the one the machine disturbed least).
    """

    def __init__(self, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
        self.protocol = protocol
        self.caplog = caplog
        self.healthy = self.faulty = float("inf")  # CPU of the application's thread, per flow
        self.healthy_wall = self.faulty_wall = float("inf")
        self.memory_held = 0
        self.delivered_dropped = 0.0

    def _measure(self, healthy_port: int, faulty_port: int) -> None:
        self.healthy = self.faulty = float("inf")
        self.healthy_wall = self.faulty_wall = float("inf")
        for _ in range(ROUNDS):
            with registered(self.protocol, healthy_port, shutdown_s=2.0):
                run_flows(WARM_UP)
                cpu, wall = batch_cost()
                self.healthy, self.healthy_wall = min(self.healthy, cpu), min(self.healthy_wall, wall)
            with registered(self.protocol, faulty_port):
                run_flows(2 * QUEUE)  # more than the queue holds: the drops have begun
                cpu, wall = batch_cost()
                self.faulty, self.faulty_wall = min(self.faulty, cpu), min(self.faulty_wall, wall)

    def during(self, faulty_port: int) -> None:
        """Flows during the fault: no exception, cost within 1.2x, memory bounded, drops reported once.
        Leaves hud_otel registered against the faulty endpoint."""
        with (
            self.caplog.at_level(logging.WARNING, logger="hud_otel"),
            receiver_on(self.protocol, 0) as healthy,
        ):
            # A second set of rounds only if the first was disturbed (the machine is shared); the ratio
            # asserted is that of one set, measured side by side.
            for _attempt in range(3):
                self._measure(port_of(healthy, self.protocol), faulty_port)
                if self.faulty <= COST_RATIO * self.healthy:
                    break
            self._final = registered(self.protocol, faulty_port, shutdown_s=1.0)
            self._final.__enter__()
            try:
                run_flows(2 * QUEUE)
                # 2 x 3,000 flows more while nothing is sent: the second 3,000 leave nothing more behind.
                self.memory_held = memory_growth(3_000)
                assert self.faulty <= COST_RATIO * self.healthy, (self.faulty, self.healthy)
                # Never blocked: an export waiting on the backend (seconds) would show in the wall time.
                assert self.faulty_wall <= 2 * self.healthy_wall, (self.faulty_wall, self.healthy_wall)
                # Less than the queue itself could hold (256 spans of up to 16 KiB): nothing piles up.
                assert self.memory_held < QUEUE * 16 * 1024, self.memory_held
                assert len(drop_reports(self.caplog)) == 1, drop_reports(self.caplog)
            except BaseException:
                self._final.__exit__(None, None, None)
                raise

    def after(self, rx: OtlpReceiver, label: str, timeout: float = 30.0) -> None:
        """Once the backend is back: new flows arrive, and so does the count of what was dropped."""
        try:
            run_flows(5, label)
            deadline = time.monotonic() + timeout
            while len(rx.spans(label)) < 5 and time.monotonic() < deadline:
                hud.flush(2.0)
                time.sleep(0.1)
            assert len(rx.spans(label)) == 5, f"after recovery {len(rx.spans(label))} of 5 flows arrived"
            dropped = rx.wait_for_metrics(A.METRIC_EXPORT_DROPPED, timeout=10)
            self.delivered_dropped = max(p.value or 0 for m in dropped for p in m.data_points)
            assert self.delivered_dropped > 0
        finally:
            self._final.__exit__(None, None, None)

    def figures(self, name: str) -> str:
        return (
            f"[figures] {name} ({self.protocol}): flow cost {self.faulty / self.healthy:.2f}x healthy "
            f"({self.healthy * 1e6:.0f} us -> {self.faulty * 1e6:.0f} us CPU), memory growth over 3,000 more "
            f"flows {self.memory_held / 1024:.0f} KiB, drops reported once and counted "
            f"(hud.export.dropped {self.delivered_dropped:.0f} delivered after recovery)"
        )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_refused_then_the_backend_comes_up(protocol, caplog):
    """Nothing listens on the endpoint: flows cost what they cost with a healthy backend, memory stays
    bounded, drops are reported once; when a receiver starts on that port, new flows are delivered and
    so is the count of the dropped ones."""
    fault = Fault(protocol, caplog)
    port = free_port()
    fault.during(port)
    with receiver_on(protocol, port) as rx:
        fault.after(rx, "after-refused")
    print("\n" + fault.figures("connection refused"))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_that_accepts_and_never_answers(protocol, caplog):
    """The endpoint accepts connections and never answers: exports time out in the background while
    flows keep their healthy cost and bounded memory; once a real receiver replaces it, flows arrive."""
    fault = Fault(protocol, caplog)
    hole = Blackhole()
    try:
        fault.during(hole.port)
        assert hole.accepted >= 1  # the exporter did connect, and waited
    finally:
        hole.stop()
    with receiver_on(protocol, hole.port) as rx:
        fault.after(rx, "after-blackhole")
    print("\n" + fault.figures("accepts, never answers"))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unavailable_then_recovers(protocol, caplog):
    """The backend answers UNAVAILABLE (gRPC) / 503 (HTTP) to every export for a while, then recovers:
    flows keep their cost and bounded memory, drops are reported once, and afterwards new flows and the
    drop count are delivered."""
    fault = Fault(protocol, caplog)
    with receiver_on(protocol, 0) as rx:
        rx.fail_next(1_000_000, "UNAVAILABLE")
        fault.during(port_of(rx, protocol))
        assert rx.request_count(ok=False) >= 1
        rx.clear()  # recovered: no more faults
        fault.after(rx, "after-unavailable")
    print("\n" + fault.figures("UNAVAILABLE/503, then recovers"))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_slow_backend(protocol, caplog):
    """Every export is held for 1.5 s: flows keep their healthy cost and bounded memory, what the queue
    cannot hold is dropped and reported once, and once the backend is fast again new flows arrive."""
    fault = Fault(protocol, caplog)
    with receiver_on(protocol, 0) as rx:
        rx.set_delay(1.5)
        fault.during(port_of(rx, protocol))
        rx.set_delay(0)
        fault.after(rx, "after-slow")
    print("\n" + fault.figures("slow, 1.5 s an export"))


def test_flush_and_shutdown_stay_bounded_and_quiet_with_the_backend_down():
    """With nothing listening, flows around ``flush``/``shutdown`` run the user's code and return its
    value, and ``flush``/``shutdown`` return within their timeouts without raising."""
    with registered("grpc", free_port(), shutdown_s=0.3):

        @hud.sync_flow("app")
        def app(x: int) -> int:
            hud.set_context(x=x)
            return x * 2

        assert [app(i) for i in range(100)] == [i * 2 for i in range(100)]
        started = time.monotonic()
        assert hud.flush(0.3) is False
    assert time.monotonic() - started < 2.0
    assert app(21) == 42  # after shutdown: the function still runs
