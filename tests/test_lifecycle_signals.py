"""Process lifecycle with real child interpreters: exit during a flow, signals, and ``os._exit``.

Each test starts a script that registers hud_otel against a loopback receiver, enters a flow and says
"ready"; the test then ends the process the way the case says and checks what the receiver got and how
the process ended. ``os._exit()`` (and SIGKILL, and SIGTERM without ``handle_sigterm``) skip every
handler: they are the documented cases that lose the running flow.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hud_otel._receiver import OtlpReceiver
from tests.otlp import clean_environ

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver(http_port=None) as rx:
        yield rx


@pytest.fixture(autouse=True)
def _fresh(receiver):
    receiver.clear()


PRELUDE = """
import os, signal, sys, threading, time
import hud_otel

def wait_for_the_end():
    for _ in range(600):  # at most 30 s: the test ends the process long before
        time.sleep(0.05)
"""


class Child:
    """A child interpreter running ``body``; it prints "ready" once its flow is open."""

    def __init__(self, receiver: OtlpReceiver, body: str, **env: str) -> None:
        source = PRELUDE + textwrap.dedent(body)
        environ = clean_environ(
            HUD_OTEL_ENDPOINT=receiver.grpc_endpoint,
            HUD_OTEL_PROTOCOL="grpc",
            HUD_OTEL_EXIT_TIMEOUT="5",
            **env,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._stderr: list[str] = []
        self._ready = threading.Event()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.strip() == "ready":
                self._ready.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.append(self.proc.stderr.read())

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self._ready.wait(timeout):
            self.proc.kill()
            raise AssertionError(f"child never got ready: {self.finish()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """(exit status, stderr); a negative status is the signal that killed it."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("child did not end") from None
        for reader in self._readers:
            reader.join(timeout=5)
        return self.proc.returncode, "".join(self._stderr)


LONG_FLOW = """
hud_otel.register({register_args})
with hud_otel.sync_flow("long-job"):
    hud_otel.set_context(step=1)
    print("ready", flush=True)
    wait_for_the_end()
print("the flow ended by itself", flush=True)
"""


def nothing_arrives(receiver: OtlpReceiver, wait_s: float = 1.0) -> bool:
    time.sleep(wait_s)
    return receiver.span_total == 0


def test_sigterm_with_handle_sigterm_ends_the_flow_failed_flushes_and_dies_of_sigterm(receiver):
    """With ``register(handle_sigterm=True)`` and no handler of the application's, SIGTERM during a flow:
    the flow arrives failed with error SIGTERM and its context, and the process still dies of SIGTERM."""
    child = Child(receiver, LONG_FLOW.format(register_args="handle_sigterm=True"))
    child.wait_ready()
    child.signal(signal.SIGTERM)
    status, stderr = child.finish()
    assert status == -signal.SIGTERM, stderr
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.name, span.attributes["hud.flow.outcome"], span.attributes["hud.flow.error"]) == (
        "long-job",
        "failure",
        "SIGTERM",
    )
    assert (span.status_code, span.status_description) == ("ERROR", "SIGTERM")
    assert span.attributes["hud.context.step"] == 1
    assert "the flow ended by itself" not in child.lines


def test_handle_sigterm_from_the_environment(receiver):
    """``HUD_OTEL_HANDLE_SIGTERM=true`` turns the handling on without changing the code."""
    child = Child(receiver, LONG_FLOW.format(register_args=""), HUD_OTEL_HANDLE_SIGTERM="true")
    child.wait_ready()
    child.signal(signal.SIGTERM)
    status, stderr = child.finish()
    assert status == -signal.SIGTERM, stderr
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert span.attributes["hud.flow.error"] == "SIGTERM"


def test_sigterm_without_the_setting_loses_the_running_flow(receiver):
    """The default: SIGTERM kills the process at once, no handler runs, the running flow is lost (the
    documented reason to opt in)."""
    child = Child(receiver, LONG_FLOW.format(register_args=""))
    child.wait_ready()
    child.signal(signal.SIGTERM)
    status, _ = child.finish()
    assert status == -signal.SIGTERM
    assert nothing_arrives(receiver)


def test_the_applications_own_sigterm_handler_is_chained(receiver):
    """The application's handler (installed before ``register``) still runs, first; it raises
    ``SystemExit(0)``, so the process is leaving: the flow arrives failed with error SIGTERM (not the
    success a ``SystemExit(0)`` alone would give), and the exit code is the application's."""
    body = textwrap.dedent(
        """
        def graceful_exit(signum, frame):
            print("app handler ran", flush=True)
            sys.exit(0)

        signal.signal(signal.SIGTERM, graceful_exit)
        """
    ) + LONG_FLOW.format(register_args="handle_sigterm=True")
    child = Child(receiver, body)
    child.wait_ready()
    child.signal(signal.SIGTERM)
    status, stderr = child.finish()
    assert status == 0, stderr
    assert "app handler ran" in child.lines
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.attributes["hud.flow.outcome"], span.attributes["hud.flow.error"]) == ("failure", "SIGTERM")


def test_a_graceful_application_handler_lets_the_flow_finish(receiver):
    """An application handler that only asks the work to stop (and returns) keeps the process alive: the
    running flow is not cut short, it finishes on its own and arrives as a success."""
    body = """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    hud_otel.register(handle_sigterm=True)
    with hud_otel.sync_flow("drains"):
        print("ready", flush=True)
        stop.wait(30)
        hud_otel.set_context(drained=True)
    print("drained", flush=True)
    """
    child = Child(receiver, body)
    child.wait_ready()
    child.signal(signal.SIGTERM)
    status, stderr = child.finish()
    assert status == 0, stderr
    assert "drained" in child.lines
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.name, span.attributes["hud.flow.outcome"], span.attributes["hud.context.drained"]) == (
        "drains",
        "success",
        True,
    )


def test_sigterm_ends_flows_running_in_other_threads_and_tasks(receiver):
    """With ``handle_sigterm``, flows running in a worker thread and in an asyncio task (which the main
    thread's context cannot see) also arrive, failed with error SIGTERM."""
    body = """
    import asyncio
    hud_otel.register(handle_sigterm=True)
    started = threading.Barrier(2)

    def worker():
        with hud_otel.sync_flow("in-thread"):
            started.wait()
            wait_for_the_end()

    threading.Thread(target=worker, daemon=True).start()

    async def job():
        async with hud_otel.async_flow("in-task"):
            started.wait()
            print("ready", flush=True)
            for _ in range(600):
                await asyncio.sleep(0.05)

    asyncio.run(job())
    """
    child = Child(receiver, body)
    child.wait_ready()
    child.signal(signal.SIGTERM)
    status, stderr = child.finish()
    assert status == -signal.SIGTERM, stderr
    spans = {s.name: s for s in receiver.wait_for_spans(2, timeout=10)}
    assert {name: s.attributes["hud.flow.error"] for name, s in spans.items()} == {
        "in-thread": "SIGTERM",
        "in-task": "SIGTERM",
    }


def test_ctrl_c_during_a_flow_sends_it_failed(receiver):
    """SIGINT (Ctrl-C) raises KeyboardInterrupt in the flow: it arrives failed with that error, sent at
    exit, and the process ends as Python ends on an uncaught KeyboardInterrupt."""
    child = Child(receiver, LONG_FLOW.format(register_args=""))
    child.wait_ready()
    child.signal(signal.SIGINT)
    status, stderr = child.finish()
    assert status in (1, -signal.SIGINT, 130), stderr
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.attributes["hud.flow.outcome"], span.attributes["hud.flow.error"]) == (
        "failure",
        "KeyboardInterrupt",
    )


def test_os_exit_during_a_flow_loses_it(receiver):
    """``os._exit()`` ends the process without running any handler or flushing: the one in-process way
    to lose a flow (documented). A flow ended before it, and flushed, arrives."""
    body = """
    hud_otel.register()
    with hud_otel.sync_flow("before"):
        pass
    hud_otel.flush(5)
    with hud_otel.sync_flow("cut"):
        print("ready", flush=True)
        os._exit(7)
    """
    child = Child(receiver, body)
    status, _ = child.finish()
    assert status == 7
    time.sleep(1.0)
    assert [s.name for s in receiver.spans()] == ["before"]


def test_sigterm_handler_needs_the_main_thread(receiver):
    """``register(handle_sigterm=True)`` from a thread other than the main one cannot install a signal
    handler: it says so once and registers anyway; flows are recorded as usual."""
    body = """
    import logging
    logging.basicConfig(level=logging.WARNING)

    def setup():
        hud_otel.register(handle_sigterm=True)

    t = threading.Thread(target=setup)
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with hud_otel.sync_flow("registered-in-a-thread"):
        pass
    """
    child = Child(receiver, body)
    status, stderr = child.finish()
    assert status == 0, stderr
    assert stderr.count("handle_sigterm needs register() to run in the main thread") == 1
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert span.name == "registered-in-a-thread"


def test_an_ignored_sigterm_stays_ignored(receiver):
    """An application that ignores SIGTERM keeps doing so with ``handle_sigterm``: the signal changes
    nothing and the flow finishes as a success."""
    body = """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    hud_otel.register(handle_sigterm=True)
    with hud_otel.sync_flow("ignores"):
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    """
    child = Child(receiver, body)
    status, stderr = child.finish()
    assert status == 0, stderr
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert span.attributes["hud.flow.outcome"] == "success"


def test_handle_sigterm_must_be_a_bool(otel_globals):
    """``register(handle_sigterm="yes")`` is an explicitly invalid argument: ``TypeError``, and nothing
    is registered or installed."""
    import hud_otel
    from hud_otel._state import STATE

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TypeError, match="handle_sigterm"):
        hud_otel.register(handle_sigterm="yes", tracer_provider=None)  # type: ignore[arg-type]
    assert STATE.runtime is None
    assert signal.getsignal(signal.SIGTERM) is before
