// The dashboard's live part: the fleet table and the traffic charts, polled every 2 seconds
// from /api/v1/nodes and /api/v1/stats and drawn as plain SVG (a few dozen lines instead of a
// chart library: three time series need axes, lines and stacked bars, nothing more).
"use strict";

(() => {
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const STATUS_CLASSES = ["2xx", "3xx", "4xx", "5xx"];
  const RECENT = 10;  // seconds the "now" figures and the per-route table average over

  let skew = 0;  // server clock minus browser clock, in seconds (from /stats' "now")
  let lastStats = null;

  const serverNow = () => Date.now() / 1000 + skew;

  function el(name, attrs = {}, parent = null) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (parent) parent.append(node);
    return node;
  }

  // The smallest of 1, 2, 5, 10, 20, 50, ... (times a power of ten) at or above `value`.
  function niceCeil(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (step * power >= value * (1 - 1e-9)) return step * power;
    return 10 * power;
  }

  function formatNumber(value) {
    if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + "k";
    if (value >= 10 || Number.isInteger(value)) return String(Math.round(value));
    return String(Number(value.toPrecision(2)));  // 6.6, 0.25, 0.02
  }

  // One chart: series of per-second values (null = no data) drawn as lines, or stacked bars.
  function drawChart(svg, { series, stacked = false, unit = "", span }) {
    const width = Math.max(svg.clientWidth || 0, 240);
    const height = Math.max(svg.clientHeight || 0, 120);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    const pad = { left: 40, right: 8, top: 8, bottom: 20 };
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const n = series.length ? series[0].values.length : 0;
    let max = 0;
    for (let i = 0; i < n; i += 1) {
      if (stacked) max = Math.max(max, series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
      else for (const s of series) if (s.values[i] != null) max = Math.max(max, s.values[i]);
    }
    const TICKS = 4;
    const top = niceCeil(max / TICKS) * TICKS;  // round tick labels: 0, 5, 10, 15, 20
    const x = (i) => pad.left + (n > 1 ? (i * innerW) / (n - 1) : 0);
    const y = (v) => pad.top + innerH - (v / top) * innerH;

    const grid = el("g", { class: "grid" }, svg);
    for (let k = 0; k <= TICKS; k += 1) {
      const value = (top * k) / TICKS;
      el("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }, grid);
      const label = el("text", { x: pad.left - 6, y: y(value) + 4, "text-anchor": "end" }, grid);
      label.textContent = formatNumber(value) + (k === TICKS ? unit : "");
    }
    for (const [i, text] of [[0, `-${span}s`], [Math.floor((n - 1) / 2), `-${Math.round(span / 2)}s`], [n - 1, "now"]]) {
      const label = el("text", { x: x(i), y: height - 4, "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle" }, grid);
      label.textContent = text;
    }

    if (stacked) {
      const barW = Math.max(innerW / Math.max(n, 1) - 1, 1);
      for (let i = 0; i < n; i += 1) {
        let base = 0;
        for (const s of series) {
          const value = s.values[i] || 0;
          if (value > 0) {
            el("rect", {
              class: "bar " + s.cls,
              x: x(i) - barW / 2,
              y: y(base + value),
              width: barW,
              height: Math.max(y(base) - y(base + value), 0.5),
            }, svg);
          }
          base += value;
        }
      }
      return;
    }
    for (const s of series) {
      let d = "";
      let pen = false;
      s.values.forEach((value, i) => {
        if (value == null) {
          pen = false;  // a gap: no data for that second
          return;
        }
        d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(value).toFixed(1) + " ";
        pen = true;
      });
      if (d) el("path", { class: "line " + s.cls, d }, svg);
    }
  }

  function sparkline(values) {
    const svg = el("svg", { class: "spark", viewBox: "0 0 120 24", preserveAspectRatio: "none", "aria-hidden": "true" });
    const top = niceCeil(Math.max(...values, 0));
    const points = values.map((v, i) => `${(i * 120) / Math.max(values.length - 1, 1)},${23 - (v / top) * 22}`);
    el("polyline", { points: points.join(" "), class: "line rps" }, svg);
    return svg;
  }

  // Per-second rows of one series, laid on the window's seconds (missing seconds: no entry).
  function bySecond(rows, first, count) {
    const out = new Array(count).fill(null);
    for (const row of rows || []) {
      const i = row.second - first;
      if (i >= 0 && i < count) out[i] = row;
    }
    return out;
  }

  function recentSummary(rows) {
    const recent = rows.slice(-RECENT);
    let requests = 0;
    let errors = 0;
    let p99 = null;
    for (const row of recent) {
      if (!row) continue;
      requests += row.requests || 0;
      errors += (row["4xx"] || 0) + (row["5xx"] || 0);
      if (row.p99 != null) p99 = Math.max(p99 || 0, row.p99);
    }
    return { rps: requests / RECENT, requests, errors, p99 };
  }

  function ms(seconds) {
    if (seconds == null) return "—";
    const value = seconds * 1000;
    return (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)) + " ms";
  }

  function routeLabel(route) {
    return route === "-" ? "(no route: 404)" : route;
  }

  function render(root) {
    const stats = lastStats;
    if (!stats) return;
    const span = Number(root.dataset.window) || 120;
    // The newest second or two are not published yet: the chart ends where the data does.
    const last = stats.now - 2;
    const first = last - span + 1;
    const scope = root.querySelector("[data-scope]");

    const known = Object.keys(stats.routes || {}).sort();
    const chosen = scope.value;
    const wanted = ["", ...new Set([...known, ...(chosen ? [chosen] : [])])];
    const have = Array.from(scope.options).map((o) => o.value);
    if (wanted.join("\n") !== have.join("\n")) {
      scope.replaceChildren(...wanted.map((route) => {
        const option = document.createElement("option");
        option.value = route;
        option.textContent = route ? "Route " + routeLabel(route) : "All routes";
        return option;
      }));
      scope.value = chosen;
    }

    const source = chosen ? (stats.routes || {})[chosen] : stats.total;
    const rows = bySecond(source, first, span);
    const rps = rows.map((row) => (row ? row.requests || 0 : 0));
    const p99 = rows.map((row) => (row && row.p99 != null ? row.p99 * 1000 : null));
    const classes = STATUS_CLASSES.map((cls) => ({ cls: "s" + cls, values: rows.map((row) => (row ? row[cls] || 0 : 0)) }));

    drawChart(root.querySelector('[data-chart="rps"]'), { series: [{ cls: "rps", values: rps }], span });
    drawChart(root.querySelector('[data-chart="status"]'), { series: classes, stacked: true, span });
    drawChart(root.querySelector('[data-chart="p99"]'), { series: [{ cls: "p99", values: p99 }], unit: " ms", span });

    const now = recentSummary(rows);
    root.querySelector('[data-now="rps"]').textContent = formatNumber(now.rps) + " req/s";
    root.querySelector('[data-now="status"]').textContent = now.requests
      ? ((100 * now.errors) / now.requests).toFixed(1) + "% errors"
      : "no requests";
    root.querySelector('[data-now="p99"]').textContent = ms(now.p99);

    const body = root.querySelector("[data-per-route]");
    const trs = known.map((route) => {
      const routeRows = bySecond(stats.routes[route], first, span);
      const summary = recentSummary(routeRows);
      const tr = document.createElement("tr");
      tr.dataset.route = route;
      const th = document.createElement("th");
      th.scope = "row";
      if (route === "-") th.textContent = routeLabel(route);
      else {
        const a = document.createElement("a");
        a.href = "/routes/" + encodeURIComponent(route);
        a.textContent = route;
        th.append(a);
      }
      const cells = [
        ["req/s (10 s)", formatNumber(summary.rps)],
        ["errors", summary.requests ? ((100 * summary.errors) / summary.requests).toFixed(1) + "%" : "—"],
        ["p99", ms(summary.p99)],
      ].map(([label, text]) => {
        const td = document.createElement("td");
        td.className = "num";
        td.dataset.label = label;
        td.textContent = text;
        return td;
      });
      const spark = document.createElement("td");
      spark.dataset.label = "Last " + Math.round(span / 60) + " min";
      spark.append(sparkline(routeRows.map((row) => (row ? row.requests || 0 : 0))));
      tr.append(th, ...cells, spark);
      return tr;
    });
    if (!trs.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = "No traffic in the last " + Math.round(span / 60) + " minutes.";
      tr.append(td);
      trs.push(tr);
    }
    body.replaceChildren(...trs);
  }

  function ago(seconds) {
    const age = Math.max(0, serverNow() - seconds);
    if (age < 90) return Math.round(age) + " s ago";
    if (age < 5400) return Math.round(age / 60) + " min ago";
    return Math.round(age / 3600) + " h ago";
  }

  function renderFleet(table, data) {
    const body = table.tBodies[0];
    const rows = (data.nodes || []).slice().sort((a, b) => String(a.node).localeCompare(String(b.node)));
    const trs = rows.map((node) => {
      const tr = document.createElement("tr");
      const cell = (content, label) => {
        const td = document.createElement("td");
        td.dataset.label = label;  // shown beside the value when a phone stacks the table
        if (content instanceof Node) td.append(content);
        else td.textContent = content;
        tr.append(td);
        return td;
      };
      const code = document.createElement("code");
      code.textContent = node.node;
      cell(code, "Node");
      cell(node.listen || "—", "Listens on");
      cell(node.rev == null ? "—" : String(node.rev), "Applied revision");
      const badge = document.createElement("span");
      badge.className = "badge " + (node.current ? "ok" : "warn");
      badge.textContent = node.current ? "current" : "behind";
      cell(badge, "State");
      if (node.last_seen) {
        const time = document.createElement("time");
        time.dateTime = new Date(node.last_seen * 1000).toISOString();
        time.title = new Date(node.last_seen * 1000).toLocaleString();
        time.textContent = ago(node.last_seen);
        cell(time, "Last seen");
      } else cell("—", "Last seen");
      return tr;
    });
    if (!trs.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = "No core has reported in: start one with minirouter core --store URL.";
      tr.append(td);
      trs.push(tr);
    }
    body.replaceChildren(...trs);
    const behind = rows.filter((node) => !node.current).length;
    const summary = document.querySelector("[data-fleet-summary]");
    if (summary) {
      summary.textContent = rows.length + " core" + (rows.length === 1 ? "" : "s") + " · config revision " + data.rev +
        (rows.length ? (behind ? " · " + behind + " behind" : " · all current") : "");
    }
    const rev = document.querySelector("[data-rev]");
    if (rev) rev.textContent = data.rev;
  }

  async function tick(root, fleet) {
    const { callApi } = window.minirouter;
    const state = root.querySelector("[data-stats-state]");
    const span = Number(root.dataset.window) || 120;
    const since = Math.floor(serverNow()) - span - 2;
    const [stats, nodes] = await Promise.all([
      callApi("GET", root.dataset.statsUrl + "?since=" + since),
      fleet ? callApi("GET", fleet.dataset.nodesUrl) : Promise.resolve(null),
    ]);
    if (stats.status === 200 && stats.body) {
      skew = stats.body.now - Date.now() / 1000;
      lastStats = stats.body;
      render(root);
      state.textContent = "Live: the last " + Math.round(span / 60) + " minutes, updated every 2 seconds (last update " +
        new Date().toLocaleTimeString() + ").";
      state.classList.remove("error");
    } else if (stats.status !== 401) {
      state.textContent = "Live data unavailable (" + ((stats.body && stats.body.error) || "HTTP " + stats.status) + "); retrying.";
      state.classList.add("error");
    }
    if (nodes && nodes.status === 200 && nodes.body) renderFleet(fleet, nodes.body);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-stats]");
    const fleet = document.querySelector("[data-fleet]");
    if (!root) return;
    let timer = null;
    const loop = async () => {
      clearTimeout(timer);
      // A hidden tab does not poll; it catches up as soon as it is shown again.
      if (!document.hidden) {
        try { await tick(root, fleet); } catch (err) { console.error(err); }
      }
      timer = setTimeout(loop, POLL_MS);  // after the answer: slow answers never pile up
    };
    document.addEventListener("visibilitychange", () => { if (!document.hidden) loop(); });
    root.querySelector("[data-scope]").addEventListener("change", () => render(root));
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => render(root), 150);
    });
    loop();
  });
})();
