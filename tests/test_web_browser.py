"""The web page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium) against `hud-otel serve` fed with flows by another process.

Skipped only when the browser is missing on a developer's machine; under CI (``CI`` set) a missing
browser fails the run, so the page is always tested there (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.test_viewer_cli import _cli, _env, _read_line

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1400

# Flows with known counts, sent through hud_otel itself over OTLP/gRPC from a separate process.
SENDER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timedelta, timezone

    import hud_otel
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    endpoint = sys.argv[1]
    resource = Resource.create({"service.name": "browser-sender"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True), export_interval_millis=3_600_000
    )
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    hud_otel.register(tracer_provider=tp, meter_provider=mp)

    @hud_otel.sync_flow("nightly-report")
    def report(i):
        hud_otel.set_context(run=i, customer="acme")
        time.sleep(0.001 * (i + 1))
        if i in (3, 7):
            raise KeyError(i)
        if i in (5, 9):
            hud_otel.set_failure("BatchRejected", reason="too big")
        if i == 0:
            with hud_otel.sync_flow("nested-attempt"):  # skipped: reason "nested"
                pass

    for i in range(10):
        try:
            report(i)
        except KeyError:
            pass
    for _ in range(3):
        with hud_otel.sync_flow("cleanup", framework="cron"):
            pass
    for i in range(5):
        with hud_otel.sync_flow("sync-users"):
            if i == 2:
                hud_otel.set_failure("Timeout")
    for j in range(6):
        with hud_otel.sync_flow(
            "orders",
            flow_type=hud_otel.FlowType.QUEUE,
            framework="sqs",
            enqueued_at=datetime.now(timezone.utc) - timedelta(milliseconds=40 * (j + 1)),
            message_count=j + 1,
        ):
            time.sleep(0.002)
    for _ in range(2):
        with hud_otel.sync_flow("emails", flow_type="queue", framework="rabbitmq"):
            pass
    assert hud_otel.flush(10)
    hud_otel.shutdown()
    tp.shutdown()
    mp.shutdown()
    """
)
FLOW_SPANS = 10 + 3 + 5 + 6 + 2


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium through chromedriver, with a throw-away profile and no network but loopback."""
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",  # tests may run as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never looks for, or downloads, a browser or driver.
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def serve_proc() -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """`hud-otel serve --json` on free ports, page included: the process and its listening line."""
    proc = subprocess.Popen(
        _cli("serve", "--json", "--grpc-port", "0", "--http-port", "0", "--web-port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        yield proc, json.loads(_read_line(proc, timeout=20))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def served(serve_proc: tuple[subprocess.Popen[str], dict[str, Any]]) -> dict[str, Any]:
    """The listening line of a running `hud-otel serve --json`."""
    return serve_proc[1]


def _wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 15) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # The page redraws on every change; an element read mid-redraw is simply read again.
        return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
            condition
        )
    except TimeoutException:
        pytest.fail(
            f"the page never showed {what}; it shows:\n{driver.find_element('tag name', 'main').text}"
        )


def _first_flow(driver: Any) -> str:
    return str(driver.find_element("css selector", "#custom-flows tbody tr td").text)


def _table(driver: Any, table_id: str) -> list[list[str]]:
    rows = driver.find_elements("css selector", f"#{table_id} tbody tr")
    return [[cell.text for cell in row.find_elements("tag name", "td")] for row in rows]


def _screenshot(driver: Any, path: Path) -> None:
    # The whole page, not only the window: grow the window to the page's height first.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(900, min(int(height) + 140, 6000)))
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    driver.set_window_size(WIDTH, 900)


def _chart(driver: Any, card_id: str) -> dict[str, Any]:
    """What an SVG chart drew: the total of each column and of each series' bars."""
    return driver.execute_script(
        """
        const svg = document.querySelector(`#${arguments[0]} svg.chart`);
        if (!svg) return null;
        const bars = [...svg.querySelectorAll(".bars rect.bar")];
        const bySeries = {};
        for (const bar of bars) {
            const series = [...bar.classList].find((c) => c !== "bar");
            bySeries[series] = (bySeries[series] || 0) + Number(bar.dataset.count);
        }
        const box = svg.getBoundingClientRect();
        return {
            columns: [...svg.querySelectorAll(".column")].map((c) => Number(c.dataset.total)),
            series: bySeries,
            bars: bars.filter((b) => Number(b.getAttribute("height")) > 0).length,
            width: box.width,
            height: box.height,
        };
        """,
        card_id,
    )


def _send_flows(endpoint: str) -> None:
    sender = subprocess.run(
        [sys.executable, "-c", SENDER, endpoint], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert sender.returncode == 0, sender.stderr


def _severe_console_messages(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_pages_show_live_flows_sortable_tables_and_charts(
    driver: Any, served: dict[str, Any], tmp_path: Path
) -> None:
    """In headless Chromium: the Custom Flows page, open before any flow arrives, fills in by itself
    once another process sends flows (live update); its rows carry the counts and error rates sent and
    sort by a clicked header; the Queues page lists the queues with their messages; a flow's page
    shows its tiles, a timeline and a duration histogram whose bars add up to its invocations, its
    recent failures with error and set_context data, and the skipped count; a queue's page adds the
    queue-wait histogram. A screenshot of each page is saved under tmp_path; the console stays clean."""
    base = served["web_url"]
    driver.get(base)
    _wait(
        driver,
        lambda d: "no custom flows received yet" in d.find_element("id", "app").text,
        "the empty table",
    )
    assert driver.find_element("id", "status").get_attribute("data-state") == "live"
    _screenshot(driver, tmp_path / "0-empty.png")

    _send_flows(served["grpc_endpoint"])

    # Custom Flows: filled in by polling, sorted by name first.
    _wait(driver, lambda d: len(_table(d, "custom-flows")) == 3, "three custom flows")
    _wait(driver, lambda d: d.find_element("id", "skipped-total").text == "1", "the skipped flow")
    rows = _table(driver, "custom-flows")
    assert [row[:5] for row in rows] == [
        ["cleanup", "cron", "3", "0", "0.0%"],
        ["nightly-report", "custom", "10", "4", "40.0%"],
        ["sync-users", "custom", "5", "1", "20.0%"],
    ]
    assert "KeyError x2" in rows[1][8] and "BatchRejected x2" in rows[1][8]
    assert driver.find_element("css selector", "#skipped tr[data-reason='nested'] td.num").text == "1"
    assert driver.find_element("id", "totals").text.startswith(f"{FLOW_SPANS} flow span(s)")
    _screenshot(driver, tmp_path / "1-custom-flows.png")

    def header(key: str) -> Any:
        return driver.find_element("css selector", f"#custom-flows th[data-key='{key}']")

    header("invocations").click()  # numbers sort largest first
    _wait(driver, lambda d: _first_flow(d) == "nightly-report", "the sort")
    assert [r[0] for r in _table(driver, "custom-flows")] == ["nightly-report", "sync-users", "cleanup"]
    assert header("invocations").get_attribute("aria-sort") == "descending"
    header("invocations").click()
    _wait(driver, lambda d: _first_flow(d) == "cleanup", "the reversed sort")
    assert [r[0] for r in _table(driver, "custom-flows")] == ["cleanup", "sync-users", "nightly-report"]
    header("error_rate").click()
    _wait(driver, lambda d: _first_flow(d) == "nightly-report", "error rate sort")
    assert header("error_rate").get_attribute("aria-sort") == "descending"

    # Queues.
    driver.find_element("id", "nav-queues").click()
    _wait(driver, lambda d: len(_table(d, "queues")) == 2, "two queues")
    assert [row[:5] for row in _table(driver, "queues")] == [
        ["emails", "rabbitmq", "2", "2", "0.0%"],
        ["orders", "sqs", "6", str(1 + 2 + 3 + 4 + 5 + 6), "0.0%"],
    ]
    _screenshot(driver, tmp_path / "2-queues.png")

    # One custom flow, reached through its link.
    driver.find_element("id", "nav-custom").click()
    _wait(driver, lambda d: d.find_elements("link text", "nightly-report"), "the flow link")
    driver.find_element("link text", "nightly-report").click()
    _wait(
        driver, lambda d: d.find_elements("css selector", "#timeline-custom-custom svg.chart"), "the timeline"
    )
    assert driver.current_url == base + "flows/nightly-report"
    assert driver.find_element("id", "flow-name").text == "nightly-report"

    def tile(label: str) -> str:
        return str(driver.find_element("css selector", f"[data-tile='{label}'] .value").text)

    assert (tile("Invocations"), tile("Failures"), tile("Error rate")) == ("10", "4", "40.0%")
    assert tile("Skipped (all flows)") == "1"
    timeline = _chart(driver, "timeline-custom-custom")
    assert sum(timeline["columns"]) == 10
    assert timeline["series"] == {"success": 6, "failure": 4}
    durations = _chart(driver, "durations-custom-custom")
    assert sum(durations["columns"]) == 10 and durations["bars"] >= 1
    assert durations["width"] > 300 and durations["height"] > 100  # drawn at a readable size
    failures = _table(driver, "failures-table-custom-custom")
    assert len(failures) == 4
    assert sorted(row[3].split(":")[0] for row in failures) == [
        "BatchRejected",
        "BatchRejected",
        "KeyError",
        "KeyError",
    ]
    runs = sorted(
        int(row[4].split("\n")[1]) for row in failures
    )  # context cell: "run\n<i>\ncustomer\nacme..."
    assert runs == [3, 5, 7, 9]
    assert all("customer\nacme" in row[4] for row in failures)
    assert any("reason\ntoo big" in row[4] for row in failures)  # set_failure's values are context too
    _screenshot(driver, tmp_path / "3-flow-nightly-report.png")

    # One queue, with its queue-wait histogram.
    driver.get(base + "flows/orders")
    _wait(
        driver,
        lambda d: d.find_elements("css selector", "#waits-queue-sqs svg.chart"),
        "the queue-wait chart",
    )
    assert (tile("Invocations"), tile("Messages")) == ("6", "21")
    waits = _chart(driver, "waits-queue-sqs")
    assert sum(waits["columns"]) == 6 and waits["series"] == {"wait": 6}
    assert sum(_chart(driver, "durations-queue-sqs")["columns"]) == 6
    assert driver.find_element("css selector", "#failures-queue-sqs .count").text == "0"
    _screenshot(driver, tmp_path / "4-flow-orders.png")

    assert _severe_console_messages(driver) == []

    # A flow that has not arrived says so instead of failing.
    driver.get(base + "flows/not-yet")
    _wait(driver, lambda d: "has arrived yet" in d.find_element("id", "app").text, "the waiting message")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "0-empty.png",
        "1-custom-flows.png",
        "2-queues.png",
        "3-flow-nightly-report.png",
        "4-flow-orders.png",
    ]


def test_page_says_when_serve_is_gone(
    driver: Any, serve_proc: tuple[subprocess.Popen[str], dict[str, Any]]
) -> None:
    """When `serve` stops, the open page keeps what it showed and its status turns to 'cannot reach'
    instead of going blank."""
    proc, listening = serve_proc
    driver.get(listening["web_url"] + "queues")
    _wait(
        driver, lambda d: d.find_element("id", "status").get_attribute("data-state") == "live", "live status"
    )
    proc.kill()
    proc.communicate()
    _wait(
        driver, lambda d: d.find_element("id", "status").get_attribute("data-state") == "down", "down status"
    )
    assert "cannot reach" in driver.find_element("id", "status").text
    assert "no queue flows received yet" in driver.find_element("id", "app").text
