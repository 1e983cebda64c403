// The hud-otel flow viewer: one script for the three pages, polling the JSON API of the server
// that served it. The path names the page: "/" Custom Flows, "/queues" Queues, "/flows/<name>".
"use strict";

(function () {
  const REFRESH_MS = 1500;
  const app = document.getElementById("app");
  const status = document.getElementById("status");

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  function h(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  // The same units as the terminal tables.
  function fmtMs(value) {
    if (value === null || value === undefined) return "–";
    if (value >= 1000) return `${(value / 1000).toFixed(2)}s`;
    if (value >= 10) return `${value.toFixed(1)}ms`;
    return `${value.toFixed(2)}ms`;
  }

  function fmtBound(value) {
    if (value >= 1000) return `${+(value / 1000).toPrecision(3)}s`;
    return `${+value.toPrecision(3)}ms`;
  }

  function fmtRate(rate) {
    return `${(rate * 100).toFixed(1)}%`;
  }

  function rateClass(rate) {
    return rate >= 0.05 ? "bad" : rate > 0 ? "warn" : "good";
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // Times are shown in UTC, like the terminal and the JSON.
  function clock(unixSeconds) {
    const d = new Date(unixSeconds * 1000);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }

  function flowHref(name) {
    return `/flows/${encodeURIComponent(name)}`;
  }

  function fmtErrors(errors) {
    return errors.map((e) => `${e.error} x${e.count}`).join(", ") || "–";
  }

  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  // Polls `load` every REFRESH_MS and redraws only when the data changed, so a sort or a hover
  // is not disturbed by identical updates.
  function poll(load, draw) {
    let last = null;
    async function tick() {
      try {
        const data = await load();
        const text = JSON.stringify(data);
        if (text !== last) {
          last = text;
          draw(data);
        }
        const now = new Date();
        setStatus("live", `live · updated ${clock(now.getTime() / 1000)} UTC`);
      } catch (error) {
        setStatus("down", "cannot reach hud-otel serve; retrying");
      }
      setTimeout(tick, REFRESH_MS);
    }
    tick();
  }

  // ---------------------------------------------------------------------------------------------
  // Sortable tables

  // columns: [{key, label, value(row) -> sortable, cell(row) -> node|string, numeric}]
  function sortableTable(id, columns, rows, state, redraw) {
    const column = columns.find((c) => c.key === state.key) || columns[0];
    const sorted = rows.slice().sort((a, b) => {
      const va = column.value(a);
      const vb = column.value(b);
      let order;
      if (va === null || va === undefined) order = vb === null || vb === undefined ? 0 : 1;
      else if (vb === null || vb === undefined) order = -1;
      else if (typeof va === "number" && typeof vb === "number") order = va - vb;
      else order = String(va).localeCompare(String(vb));
      return state.desc ? -order : order;
    });
    const head = h(
      "tr",
      {},
      columns.map((c) => {
        const sortedHere = c.key === column.key;
        const th = h(
          "th",
          {
            "data-key": c.key,
            class: c.numeric ? "num" : null,
            "aria-sort": sortedHere ? (state.desc ? "descending" : "ascending") : "none",
            tabindex: "0",
            title: "sort",
          },
          c.label,
          h("span", { class: "arrow" }, sortedHere ? (state.desc ? " ▼" : " ▲") : ""),
        );
        const choose = () => {
          state.desc = c.key === state.key ? !state.desc : !!c.numeric;
          state.key = c.key;
          redraw();
        };
        th.addEventListener("click", choose);
        th.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            choose();
          }
        });
        return th;
      }),
    );
    const body = sorted.map((row) =>
      h(
        "tr",
        { "data-flow": row.flow },
        columns.map((c) => h("td", { class: c.numeric ? "num" : null }, c.cell(row))),
      ),
    );
    return h("table", { id: id, class: "flows sortable" }, h("thead", {}, head), h("tbody", {}, body));
  }

  function flowLink(row) {
    return h("a", { href: flowHref(row.flow) }, row.flow);
  }

  function rateCell(row) {
    return h("span", { class: `rate ${rateClass(row.error_rate)}` }, fmtRate(row.error_rate));
  }

  const CUSTOM_COLUMNS = [
    { key: "flow", label: "Flow", value: (r) => r.flow, cell: flowLink },
    { key: "framework", label: "Framework", value: (r) => r.framework, cell: (r) => r.framework },
    { key: "invocations", label: "Invocations", numeric: true, value: (r) => r.invocations, cell: (r) => r.invocations },
    { key: "failures", label: "Failures", numeric: true, value: (r) => r.failures, cell: (r) => r.failures },
    { key: "error_rate", label: "Error rate", numeric: true, value: (r) => r.error_rate, cell: rateCell },
    { key: "p50", label: "p50", numeric: true, value: (r) => r.duration_ms.p50, cell: (r) => fmtMs(r.duration_ms.p50) },
    { key: "p95", label: "p95", numeric: true, value: (r) => r.duration_ms.p95, cell: (r) => fmtMs(r.duration_ms.p95) },
    { key: "max", label: "Max", numeric: true, value: (r) => r.duration_ms.max, cell: (r) => fmtMs(r.duration_ms.max) },
    { key: "errors", label: "Top errors", value: (r) => fmtErrors(r.top_errors), cell: (r) => fmtErrors(r.top_errors) },
  ];

  const QUEUE_COLUMNS = [
    { key: "flow", label: "Flow", value: (r) => r.flow, cell: flowLink },
    { key: "framework", label: "Framework", value: (r) => r.framework, cell: (r) => r.framework },
    { key: "invocations", label: "Invocations", numeric: true, value: (r) => r.invocations, cell: (r) => r.invocations },
    { key: "messages", label: "Messages", numeric: true, value: (r) => r.messages, cell: (r) => r.messages },
    { key: "error_rate", label: "Error rate", numeric: true, value: (r) => r.error_rate, cell: rateCell },
    { key: "p50_proc", label: "p50 proc", numeric: true, value: (r) => r.processing_ms.p50, cell: (r) => fmtMs(r.processing_ms.p50) },
    { key: "p95_proc", label: "p95 proc", numeric: true, value: (r) => r.processing_ms.p95, cell: (r) => fmtMs(r.processing_ms.p95) },
    { key: "p50_wait", label: "p50 wait", numeric: true, value: (r) => r.queue_wait_ms.p50, cell: (r) => fmtMs(r.queue_wait_ms.p50) },
    { key: "p95_wait", label: "p95 wait", numeric: true, value: (r) => r.queue_wait_ms.p95, cell: (r) => fmtMs(r.queue_wait_ms.p95) },
    { key: "errors", label: "Top errors", value: (r) => fmtErrors(r.top_errors), cell: (r) => fmtErrors(r.top_errors) },
  ];

  function skippedSection(view) {
    const reasons = Object.entries(view.skipped);
    const total = reasons.reduce((sum, [, count]) => sum + count, 0);
    return h(
      "section",
      { id: "skipped", class: "card" },
      h("h2", {}, "Skipped flows ", h("span", { class: "count", id: "skipped-total" }, total)),
      reasons.length
        ? h(
            "table",
            { class: "small" },
            h("thead", {}, h("tr", {}, h("th", {}, "Reason"), h("th", { class: "num" }, "Count"))),
            h(
              "tbody",
              {},
              reasons.map(([reason, count]) =>
                h("tr", { "data-reason": reason }, h("td", {}, reason), h("td", { class: "num" }, count)),
              ),
            ),
          )
        : h("p", { class: "muted" }, "none"),
    );
  }

  function totalsLine(view) {
    const t = view.totals;
    return h(
      "p",
      { class: "muted totals", id: "totals" },
      `${t.flow_spans} flow span(s), ${t.ignored_spans} other span(s) ignored, ${t.demoted_spans} demoted`,
    );
  }

  function listPage(kind) {
    const custom = kind === "custom";
    const title = custom ? "Custom Flows" : "Queues";
    const columns = custom ? CUSTOM_COLUMNS : QUEUE_COLUMNS;
    const state = { key: "flow", desc: false };
    let latest = null;
    document.title = `${title} · hud-otel`;
    document.getElementById(custom ? "nav-custom" : "nav-queues").classList.add("active");
    function draw(view) {
      if (view) latest = view;
      if (!latest) return;
      const rows = custom ? latest.custom_flows : latest.queues;
      app.replaceChildren(
        h("h1", {}, title, " ", h("span", { class: "count", id: "flow-count" }, rows.length)),
        h(
          "section",
          { class: "card" },
          rows.length
            ? sortableTable(custom ? "custom-flows" : "queues", columns, rows, state, () => draw(null))
            : h("p", { class: "muted empty" }, custom ? "no custom flows received yet" : "no queue flows received yet"),
        ),
        skippedSection(latest),
        totalsLine(latest),
      );
    }
    poll(() => getJson("/api/view"), draw);
  }

  // ---------------------------------------------------------------------------------------------
  // One flow

  function tile(label, value, cls) {
    return h("div", { class: `tile ${cls || ""}`, "data-tile": label }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
  }

  function timelineChart(container, timeline) {
    const buckets = timeline.buckets;
    const width = timeline.bucket_seconds;
    HudCharts.bars(container, {
      ariaLabel: "invocations over time",
      categories: buckets.map((b) => clock(b.start_unix)),
      series: [
        { name: "success", cls: "success", values: buckets.map((b) => b.success) },
        { name: "failure", cls: "failure", values: buckets.map((b) => b.failure) },
        { name: "cancelled", cls: "cancelled", values: buckets.map((b) => b.cancelled) },
      ],
      tooltip: (i) => {
        const b = buckets[i];
        const total = b.success + b.failure + b.cancelled;
        const rate = total ? ` (${fmtRate(b.failure / total)} failed)` : "";
        return `${clock(b.start_unix)} +${width}s UTC: ${total} invocation(s), ${b.failure} failure(s)${rate}`;
      },
    });
  }

  function histogramChart(container, histogram, what) {
    const buckets = histogram.buckets;
    HudCharts.bars(container, {
      ariaLabel: `${what} histogram`,
      categories: buckets.map((b) => (b.high_ms === null ? `>${fmtBound(b.low_ms)}` : fmtBound(b.high_ms))),
      series: [{ name: "invocations", cls: what === "queue wait" ? "wait" : "duration", values: buckets.map((b) => b.count) }],
      tooltip: (i) => {
        const b = buckets[i];
        const range = b.high_ms === null ? `over ${fmtBound(b.low_ms)}` : `${fmtBound(b.low_ms)} – ${fmtBound(b.high_ms)}`;
        return `${what} ${range}: ${b.count}`;
      },
      empty: what === "queue wait" ? "no enqueued_at given yet" : "no data yet",
    });
  }

  function chartCard(id, title, note, draw) {
    const holder = h("div", { class: "chart-holder" });
    draw(holder);
    return h("section", { class: "card chart-card", id: id }, h("h3", {}, title, note ? h("span", { class: "muted" }, ` ${note}`) : null), holder);
  }

  function contextCell(context) {
    const entries = Object.entries(context);
    if (!entries.length) return "–";
    return h(
      "dl",
      { class: "context" },
      entries.map(([key, value]) => [h("dt", {}, key), h("dd", {}, typeof value === "string" ? value : JSON.stringify(value))]),
    );
  }

  function invocationsTable(id, invocations, queue) {
    return h(
      "table",
      { id: id, class: "invocations" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, "Start (UTC)"),
          h("th", {}, "Outcome"),
          h("th", { class: "num" }, "Duration"),
          queue ? [h("th", { class: "num" }, "Wait"), h("th", { class: "num" }, "Msgs")] : null,
          h("th", {}, "Error"),
          h("th", {}, "Context"),
          h("th", {}, "Trace id"),
        ),
      ),
      h(
        "tbody",
        {},
        invocations.map((inv) => {
          let error = inv.error || "";
          if (inv.status_description && inv.status_description !== error) {
            error = error ? `${error}: ${inv.status_description}` : inv.status_description;
          }
          return h(
            "tr",
            { "data-outcome": inv.outcome },
            h("td", { class: "time" }, inv.start_time.slice(11, 23)),
            h("td", {}, h("span", { class: `outcome ${inv.outcome}` }, inv.outcome)),
            h("td", { class: "num" }, fmtMs(inv.duration_ms)),
            queue
              ? [
                  h("td", { class: "num" }, fmtMs(inv.queue_wait_ms)),
                  h("td", { class: "num" }, inv.message_count === null ? "–" : inv.message_count),
                ]
              : null,
            h("td", { class: "error" }, error || "–"),
            h("td", {}, contextCell(inv.context)),
            h("td", { class: "trace" }, inv.trace_id),
          );
        }),
      ),
    );
  }

  function entrySection(entry, charts, skippedTotal) {
    const s = entry.summary;
    const queue = entry.flow_type === "queue";
    const durations = queue ? s.processing_ms : s.duration_ms;
    const tiles = [
      tile("Invocations", s.invocations),
      tile("Failures", s.failures, s.failures ? "bad" : ""),
      tile("Error rate", fmtRate(s.error_rate), rateClass(s.error_rate)),
      tile("Cancelled", s.cancelled),
      tile(queue ? "p50 processing" : "p50", fmtMs(durations.p50)),
      tile(queue ? "p95 processing" : "p95", fmtMs(durations.p95)),
      tile("Max", fmtMs(durations.max)),
    ];
    if (queue) {
      tiles.push(tile("Messages", s.messages), tile("p50 wait", fmtMs(s.queue_wait_ms.p50)), tile("p95 wait", fmtMs(s.queue_wait_ms.p95)));
    }
    tiles.push(tile("Skipped (all flows)", skippedTotal));
    const failures = entry.recent.filter((inv) => inv.outcome === "failure");
    const key = `${entry.flow_type}-${entry.framework}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const chartCards = [
      chartCard(`timeline-${key}`, "Invocations over time", `(${charts.timeline.bucket_seconds}s buckets, UTC)`, (c) =>
        timelineChart(c, charts.timeline),
      ),
      chartCard(`durations-${key}`, queue ? "Processing time" : "Duration", `(${charts.durations.samples} samples)`, (c) =>
        histogramChart(c, charts.durations, "duration"),
      ),
    ];
    if (queue && charts.queue_waits) {
      chartCards.push(
        chartCard(`waits-${key}`, "Queue wait", `(${charts.queue_waits.samples} samples)`, (c) =>
          histogramChart(c, charts.queue_waits, "queue wait"),
        ),
      );
    }
    return h(
      "section",
      { class: "entry", "data-flow-type": entry.flow_type, "data-framework": entry.framework },
      h("h2", {}, queue ? "Queue" : "Custom flow", " · ", entry.framework, queue && s.messaging_system ? ` · ${s.messaging_system}` : ""),
      h("div", { class: "tiles" }, tiles),
      h("div", { class: "charts" }, chartCards),
      h(
        "section",
        { class: "card", id: `failures-${key}` },
        h("h3", {}, "Recent failures ", h("span", { class: "count" }, failures.length)),
        failures.length ? invocationsTable(`failures-table-${key}`, failures, queue) : h("p", { class: "muted" }, "none among the recent invocations"),
      ),
      h(
        "details",
        { class: "card" },
        h("summary", {}, `Recent invocations (${entry.recent.length})`),
        invocationsTable(`recent-table-${key}`, entry.recent, queue),
      ),
    );
  }

  function flowPage(name) {
    document.title = `${name} · hud-otel`;
    const encoded = encodeURIComponent(name);
    // <details> elements keep their open state across redraws.
    const open = new Set();
    function draw(data) {
      app.querySelectorAll("details").forEach((d, i) => (d.open ? open.add(i) : open.delete(i)));
      const heading = h("h1", {}, h("a", { href: "/", class: "muted" }, "Flows"), " / ", h("span", { id: "flow-name" }, name));
      if (!data.detail || !data.charts) {
        app.replaceChildren(heading, h("p", { class: "muted empty" }, `no flow named “${name}” has arrived yet; waiting…`));
        return;
      }
      const skippedTotal = Object.values(data.view.skipped).reduce((a, b) => a + b, 0);
      // Two requests: an entry that arrived between them has no charts yet, and waits a tick.
      const sections = data.detail.entries.flatMap((entry) => {
        const charts = data.charts.entries.find((c) => c.flow_type === entry.flow_type && c.framework === entry.framework);
        return charts ? [entrySection(entry, charts, skippedTotal)] : [];
      });
      app.replaceChildren(heading, ...sections, skippedSection(data.view));
      app.querySelectorAll("details").forEach((d, i) => (d.open = open.has(i)));
    }
    poll(async () => {
      const [detail, charts, view] = await Promise.all([
        getJson(`/api/flows/${encoded}`),
        getJson(`/api/charts/${encoded}`),
        getJson("/api/view"),
      ]);
      return { detail, charts, view };
    }, draw);
  }

  // ---------------------------------------------------------------------------------------------
  // Routing

  const path = location.pathname;
  if (path.startsWith("/flows/")) {
    flowPage(decodeURIComponent(path.slice("/flows/".length)));
  } else if (path === "/queues") {
    listPage("queue");
  } else {
    listPage("custom");
  }
})();
