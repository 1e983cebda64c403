"""Short-lived processes lose nothing (CONTRACT section 4): real child interpreters export their flows at
exit — normal exit, sys.exit(3), an unhandled exception, a forked child, a multiprocessing child — and a
backend that is down holds the exit no longer than the exit timeout."""

from __future__ import annotations

import textwrap
import time

import pytest

from hud_otel._receiver import OtlpReceiver
from tests.otlp import clean_environ, free_port, run_script

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(autouse=True)
def _fresh(receiver):
    receiver.clear()


def env_for(rx: OtlpReceiver, protocol: str = "grpc", **extra: str) -> dict[str, str]:
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    return clean_environ(HUD_OTEL_ENDPOINT=endpoint, HUD_OTEL_PROTOCOL=protocol, **extra)


def script(body: str) -> str:
    return "import os, sys, time\nimport hud_otel\nhud_otel.register()\n" + textwrap.dedent(body)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_script_that_exits_normally_sends_its_flow_and_metrics(receiver, protocol):
    """No flush() call anywhere: the flow and its duration metric are sent when the interpreter exits."""
    done = run_script(
        script(
            """
            @hud_otel.sync_flow("exit-normally")
            def main():
                hud_otel.set_context(rows=3)

            main()
            """
        ),
        env_for(receiver, protocol),
    )
    assert done.returncode == 0, done.stderr
    (span,) = receiver.wait_for_spans(1)
    assert (span.name, span.attributes["hud.flow.outcome"], span.attributes["hud.context.rows"]) == (
        "exit-normally",
        "success",
        3,
    )
    assert receiver.wait_for_metrics("hud.flow.duration")


def test_a_script_ending_with_sys_exit_3_sends_its_flows_and_keeps_its_exit_code(receiver):
    """sys.exit(3) after one flow and inside another: both arrive (the second failed), exit code 3."""
    done = run_script(
        script(
            """
            with hud_otel.sync_flow("before-exit"):
                pass

            @hud_otel.sync_flow("exits-inside")
            def main():
                sys.exit(3)

            main()
            """
        ),
        env_for(receiver),
    )
    assert done.returncode == 3, done.stderr
    spans = {s.name: s for s in receiver.wait_for_spans(2)}
    assert spans["before-exit"].attributes["hud.flow.outcome"] == "success"
    assert (spans["exits-inside"].attributes["hud.flow.error"], spans["exits-inside"].status_description) == (
        "SystemExit",
        "SystemExit: 3",
    )


def test_a_script_dying_of_an_unhandled_exception_sends_the_failed_flow(receiver):
    """The exception kills the script (exit code 1, traceback on stderr) and the failed flow still arrives."""
    done = run_script(
        script(
            """
            @hud_otel.sync_flow("crashes")
            def main():
                raise RuntimeError("disk full")

            main()
            """
        ),
        env_for(receiver),
    )
    assert done.returncode == 1 and "RuntimeError: disk full" in done.stderr
    (span,) = receiver.wait_for_spans(1)
    assert (span.name, span.attributes["hud.flow.error"], [e.name for e in span.events]) == (
        "crashes",
        "RuntimeError",
        ["exception"],
    )


def test_a_start_flow_left_open_by_a_crash_ends_failed_at_exit_and_arrives(receiver):
    """start_flow with no try/finally, then an unhandled exception: the flow is not lost; it ends at exit,
    failed with the exception that killed the script, and a one-time warning names it."""
    done = run_script(
        script(
            """
            hud_otel.start_flow("nightly-import")
            hud_otel.set_context(rows=3)
            raise ConnectionError("db gone")
            """
        ),
        env_for(receiver),
    )
    assert done.returncode == 1 and "ConnectionError: db gone" in done.stderr
    assert "flow 'nightly-import' was still open at exit" in done.stderr
    (span,) = receiver.wait_for_spans(1)
    assert (
        span.name,
        span.attributes["hud.flow.outcome"],
        span.attributes["hud.flow.error"],
        span.attributes["hud.context.rows"],
        [e.name for e in span.events],
    ) == ("nightly-import", "failure", "ConnectionError", 3, ["exception"])


def test_a_forked_child_reports_only_its_own_flows_in_the_metrics(receiver):
    """Five flows before os.fork, one in the child: the child's hud.flow.duration counts 1, the parent's 5;
    the child never re-reports what the parent recorded."""
    done = run_script(
        script(
            """
            for i in range(5):
                with hud_otel.sync_flow("job"):
                    pass
            pid = os.fork()
            if pid == 0:
                with hud_otel.sync_flow("job"):
                    pass
                hud_otel.shutdown()
                os._exit(0)
            os.waitpid(pid, 0)
            """
        ),
        env_for(receiver),
    )
    assert done.returncode == 0, done.stderr
    records = receiver.wait_for_metrics("hud.flow.duration", n=2)
    assert sorted(point.count for record in records for point in record.data_points) == [1, 5]


def test_a_start_flow_left_open_at_a_normal_exit_ends_successfully_at_exit(receiver):
    """A script that forgets end_flow and ends normally: its flow arrives, successful."""
    done = run_script(script('hud_otel.start_flow("forgot-end")\n'), env_for(receiver))
    assert done.returncode == 0, done.stderr
    (span,) = receiver.wait_for_spans(1)
    assert (span.name, span.attributes["hud.flow.outcome"], span.status_code) == (
        "forgot-end",
        "success",
        "UNSET",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_child_made_by_os_fork_exports_its_own_flow(receiver, protocol):
    """After os.fork() the child's flow is sent by the child (over a connection of its own); the parent's too."""
    done = run_script(
        script(
            """
            pid = os.fork()
            if pid == 0:
                with hud_otel.sync_flow("in-forked-child"):
                    hud_otel.set_context(pid=os.getpid())
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            with hud_otel.sync_flow("in-parent"):
                hud_otel.set_context(child_status=status)
            """
        ),
        env_for(receiver, protocol),
    )
    assert done.returncode == 0, done.stderr
    spans = {s.name: s for s in receiver.wait_for_spans(2)}
    assert set(spans) == {"in-forked-child", "in-parent"}
    assert spans["in-parent"].attributes["hud.context.child_status"] == 0
    assert receiver.span_total == 2  # the parent's queue is not sent twice


def test_a_multiprocessing_child_with_fork_exports_its_own_flows(receiver):
    """multiprocessing children end with os._exit (no atexit); their flows are sent by its finalizers."""
    done = run_script(
        script(
            """
            import multiprocessing

            @hud_otel.sync_flow("mp-job")
            def job(n):
                hud_otel.set_context(n=n)

            if __name__ == "__main__":
                ctx = multiprocessing.get_context("fork")
                workers = [ctx.Process(target=job, args=(n,)) for n in range(3)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                print([w.exitcode for w in workers])
            """
        ),
        env_for(receiver),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 0, 0]"
    spans = receiver.wait_for_spans(3)
    assert sorted(s.attributes["hud.context.n"] for s in spans) == [0, 1, 2]


def exit_seconds(endpoint: str, protocol: str, exit_timeout: str) -> tuple[float, str]:
    """Run three flows against ``endpoint``; how long the exit took after the script's own code, and stderr."""
    body = """
        for i in range(3):
            with hud_otel.sync_flow("unsent"):
                pass
        print(time.time(), flush=True)
        """
    env = clean_environ(
        HUD_OTEL_ENDPOINT=endpoint, HUD_OTEL_PROTOCOL=protocol, HUD_OTEL_EXIT_TIMEOUT=exit_timeout
    )
    done = run_script(script(body), env)
    ended = time.time()
    assert done.returncode == 0, done.stderr
    return ended - float(done.stdout.strip()), done.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_with_nothing_listening_a_script_exits_at_once_instead_of_retrying_for_the_exit_timeout(protocol):
    """Nothing listens at the endpoint (connection refused): the exit does not spend its 30 s timeout in
    export retries; it drops the pending flows at once, says so in one line, and the exporter's retry
    warnings never appear."""
    port = free_port()
    took, stderr = exit_seconds(f"http://127.0.0.1:{port}", protocol, "30")
    # A third of the exit timeout: far more than the give-up takes, far less than waiting it out.
    assert took < 10.0, f"exit took {took:.2f}s"
    assert f"nothing accepts connections at 127.0.0.1:{port}" in stderr
    assert "Transient error" not in stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_with_a_backend_that_accepts_and_never_answers_a_script_exits_within_the_exit_timeout_plus_one_second(
    protocol,
):
    """A backend that takes the connection and never answers: the exit waits at most HUD_OTEL_EXIT_TIMEOUT
    (1 s here) plus one second, measured from the end of the script's own code, and says what was not sent."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        took, stderr = exit_seconds(f"http://127.0.0.1:{silent.getsockname()[1]}", protocol, "1")
    assert took < 1.0 + 1.0, f"exit took {took:.2f}s"
    assert "not all sent within 1.0 s at exit" in stderr
