// Bar charts drawn as plain SVG: the only chart shapes the page needs (stacked bars over time, and
// histograms), small enough to read in one sitting, and inspectable through the DOM by tests.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 640;
  const HEIGHT = 220;
  const MARGIN = { top: 12, right: 12, bottom: 36, left: 44 };

  function el(name, attributes, text) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      node.setAttribute(key, String(value));
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  // 1, 2, 5 x 10^n steps, so the axis reads in round numbers.
  function niceStep(max, ticks) {
    const raw = max / ticks;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) {
      if (m * power >= raw) {
        return Math.max(1, m * power);
      }
    }
    return Math.max(1, 10 * power);
  }

  // opts: {categories: [label], series: [{name, cls, values: [number]}], tooltip(i) -> string,
  //        ariaLabel, empty}. Series stack on top of each other in the order given.
  function bars(container, opts) {
    container.textContent = "";
    const n = opts.categories.length;
    const svg = el("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: "chart",
      role: "img",
      "aria-label": opts.ariaLabel || "bar chart",
    });
    container.appendChild(svg);
    if (n === 0) {
      svg.appendChild(el("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "empty" }, opts.empty || "no data yet"));
      return svg;
    }
    const totals = opts.categories.map((_, i) => opts.series.reduce((sum, s) => sum + s.values[i], 0));
    const step = niceStep(Math.max(1, ...totals), 4);
    const top = Math.max(step, Math.ceil(Math.max(1, ...totals) / step) * step);
    const plotW = WIDTH - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const y = (v) => MARGIN.top + plotH - (v / top) * plotH;

    const grid = el("g", { class: "grid" });
    for (let v = 0; v <= top + 1e-9; v += step) {
      grid.appendChild(el("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(v), y2: y(v) }));
      grid.appendChild(el("text", { x: MARGIN.left - 6, y: y(v) + 4, class: "tick y" }, String(v)));
    }
    svg.appendChild(grid);

    const band = plotW / n;
    // Capped, so one or two buckets read as bars rather than as blocks.
    const barW = Math.max(1, Math.min(band * 0.8, 56));
    const barsGroup = el("g", { class: "bars" });
    totals.forEach((total, i) => {
      const x = MARGIN.left + i * band + (band - barW) / 2;
      let base = 0;
      const column = el("g", { class: "column", "data-index": i, "data-total": total });
      column.appendChild(el("title", {}, opts.tooltip ? opts.tooltip(i) : `${opts.categories[i]}: ${total}`));
      // A transparent full-height target so the tooltip shows over empty buckets too.
      column.appendChild(el("rect", { x: x, y: MARGIN.top, width: barW, height: plotH, class: "hit" }));
      for (const series of opts.series) {
        const value = series.values[i];
        if (value > 0) {
          column.appendChild(
            el("rect", {
              x: x,
              y: y(base + value),
              width: barW,
              height: Math.max(1, y(base) - y(base + value)),
              class: `bar ${series.cls}`,
              "data-count": value,
            }),
          );
        }
        base += value;
      }
      barsGroup.appendChild(column);
    });
    svg.appendChild(barsGroup);

    const axis = el("g", { class: "axis" });
    axis.appendChild(
      el("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0), class: "baseline" }),
    );
    const every = Math.max(1, Math.ceil(n / 8));
    opts.categories.forEach((label, i) => {
      if (i % every === 0) {
        const x = MARGIN.left + i * band + band / 2;
        axis.appendChild(el("text", { x: x, y: HEIGHT - MARGIN.bottom + 16, class: "tick x" }, label));
      }
    });
    svg.appendChild(axis);

    if (opts.series.length > 1) {
      const legend = el("g", { class: "legend" });
      let x = MARGIN.left;
      for (const series of opts.series) {
        legend.appendChild(el("rect", { x: x, y: HEIGHT - 12, width: 10, height: 10, class: `bar ${series.cls}` }));
        legend.appendChild(el("text", { x: x + 14, y: HEIGHT - 3, class: "legend-label" }, series.name));
        x += 14 + 8 * series.name.length + 16;
      }
      svg.appendChild(legend);
    }
    return svg;
  }

  window.HudCharts = { bars: bars };
})();
