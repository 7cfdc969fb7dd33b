/* Foresight dashboard: reads <prefix>/overview and <prefix>/series, draws with the bundled Plotly.js.
 *
 * Every text from the server is inserted with textContent; only the plugin's own URLs are requested.
 */
(function () {
  "use strict";

  var PREFIX = (document.body.getAttribute("data-prefix") || "/foresight").replace(/\/+$/, "");
  var MAX_RECOMMENDATIONS = 500;
  var LABELS = {
    entity: "Entity", metric: "Metric", resource: "Resource", kind: "Kind", lead: "Lead",
    period_start: "From", period_end: "To", request_display: "Request", limit_display: "Limit",
    replicas: "Replicas", confidence: "Confidence", model: "Model", reason: "Reason"
  };
  var BAND_COLORS = {"80": "rgba(37, 99, 235, 0.28)", "95": "rgba(37, 99, 235, 0.13)"};
  var view = {overview: null, token: 0};

  function byId(id) { return document.getElementById(id); }

  function node(tag, text, className) {
    var element = document.createElement(tag);
    if (text !== undefined && text !== null) { element.textContent = String(text); }
    if (className) { element.className = className; }
    return element;
  }

  function clear(element) {
    while (element.firstChild) { element.removeChild(element.firstChild); }
  }

  function isNumber(value) { return typeof value === "number" && isFinite(value); }

  function number(value, digits) {
    return isNumber(value) ? value.toFixed(digits === undefined ? 3 : digits) : "–";
  }

  function utc(iso) {
    if (!iso) { return "–"; }
    var date = new Date(iso);
    if (isNaN(date.getTime())) { return String(iso); }
    return date.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function ago(iso) {
    var date = new Date(iso);
    if (!iso || isNaN(date.getTime())) { return ""; }
    var minutes = Math.round((Date.now() - date.getTime()) / 60000);
    if (minutes < 0) { return "in the future"; }
    if (minutes < 60) { return minutes + " min ago"; }
    if (minutes < 48 * 60) { return Math.round(minutes / 60) + " h ago"; }
    return Math.round(minutes / 1440) + " days ago";
  }

  /* Plotly has no time zones: every published time is UTC, so drop the offset. */
  function plotTime(iso) {
    return String(iso).replace("T", " ").replace(/(Z|[+-]\d\d:?\d\d)$/, "");
  }

  function getJSON(path) {
    return fetch(PREFIX + path, {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        return response.text().then(function (text) {
          var body = null;
          try { body = text ? JSON.parse(text) : null; } catch (ignored) { body = null; }
          if (!response.ok) {
            var detail = body && body.detail ? body.detail : "HTTP " + response.status;
            throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
          }
          return body;
        });
      });
  }

  function safeUrl(url) {
    return typeof url === "string" && /^(\/|https?:\/\/)/i.test(url) ? url : null;
  }

  function showErrors(messages, title) {
    var box = byId("errors");
    var list = box.querySelector("ul");
    box.querySelector("strong").textContent = title || "Some published files could not be read:";
    clear(list);
    (messages || []).forEach(function (message) { list.appendChild(node("li", message)); });
    box.hidden = list.childNodes.length === 0;
  }

  function setLink(anchor, link, name) {
    var url = link ? safeUrl(link.url) : null;
    if (url) {
      anchor.setAttribute("href", url);
      anchor.textContent = name + ": " + (link.label || url);
      anchor.classList.remove("disabled");
    } else {
      anchor.removeAttribute("href");
      anchor.textContent = name + ": not configured";
      anchor.classList.add("disabled");
    }
  }

  function renderHeader(data) {
    var run = data.run || {};
    byId("published-at").textContent = data.published_at
      ? utc(data.published_at) + " (" + ago(data.published_at) + ")" : "nothing published yet";
    byId("data-interval").textContent = utc(run.data_interval_end);
    byId("run-id").textContent = run.airflow_run_id || run.run_key || "–";
    byId("data-root").textContent = data.data_root || "–";
    setLink(byId("airflow-run"), (data.links || {}).airflow, "Airflow");
    setLink(byId("mlflow-run"), (data.links || {}).mlflow, "MLflow");
  }

  function headerRow(table, names, numeric) {
    var head = node("thead");
    var row = node("tr");
    names.forEach(function (name, i) { row.appendChild(node("th", name, numeric && numeric(i) ? "num" : "")); });
    head.appendChild(row);
    table.appendChild(head);
  }

  function emptyRow(body, columns, text) {
    var row = node("tr");
    var cell = node("td", text, "empty-row");
    cell.colSpan = columns;
    row.appendChild(cell);
    body.appendChild(row);
  }

  function maseCell(value) {
    return node("td", number(value), "num" + (isNumber(value) ? (value < 1 ? " good" : " poor") : ""));
  }

  // The champion score is computed by the server (the configured champion criterion); shown, never recomputed.
  function scoreOf(entry) {
    return entry.score === undefined ? entry.mean_mase : entry.score;
  }

  function scoreLabel(data) {
    return !data.criterion || data.criterion === "mean_mase" ? "Mean" : "Score (" + data.criterion + ")";
  }

  function renderChampions(data) {
    var table = byId("champions");
    var horizons = data.horizons || [];
    clear(table);
    headerRow(table, ["Metric", "Champion", "Version"].concat(horizons, [scoreLabel(data)]), function (i) { return i >= 2; });
    var body = node("tbody");
    (data.champions || []).forEach(function (champion) {
      var row = node("tr");
      row.appendChild(node("td", champion.metric));
      var model = node("td");
      model.appendChild(node("span", champion.model || "unknown", champion.model ? "badge champion" : "badge none"));
      row.appendChild(model);
      row.appendChild(node("td", champion.version === null || champion.version === undefined
        ? "–" : "v" + champion.version, "num"));
      horizons.forEach(function (h) { row.appendChild(maseCell((champion.mase || {})[h])); });
      row.appendChild(maseCell(scoreOf(champion)));
      body.appendChild(row);
    });
    if (!body.childNodes.length) { emptyRow(body, horizons.length + 4, "No champion known yet."); }
    table.appendChild(body);
  }

  function renderLeaderboard(data) {
    var table = byId("leaderboard");
    var horizons = data.horizons || [];
    var rows = data.leaderboard || [];
    clear(table);
    byId("leaderboard-scope").textContent = data.leaderboard_scope === "all"
      ? "MASE per model and horizon over every metric (no per-metric scores were published)"
      : "MASE per model and horizon, per metric; the champion is highlighted";
    headerRow(table, ["Model"].concat(horizons, [scoreLabel(data)]), function (i) { return i >= 1; });
    var body = node("tbody");
    var current = null;
    rows.forEach(function (entry) {
      var group = entry.metric || "all metrics";
      if (current !== group) {
        current = group;
        var heading = node("tr", null, "group");
        var cell = node("td", group);
        cell.colSpan = horizons.length + 2;
        heading.appendChild(cell);
        body.appendChild(heading);
      }
      var row = node("tr", null, entry.champion ? "champion" : "");
      var name = node("td", entry.model + " ");
      if (entry.champion) { name.appendChild(node("span", "champion", "badge champion")); }
      row.appendChild(name);
      horizons.forEach(function (h) { row.appendChild(maseCell((entry.mase || {})[h])); });
      row.appendChild(maseCell(scoreOf(entry)));
      body.appendChild(row);
    });
    if (!rows.length) { emptyRow(body, horizons.length + 2, "No leaderboard published."); }
    table.appendChild(body);
  }

  function renderPlan(plan) {
    var box = byId("plan-state");
    clear(box);
    plan = plan || {published: false, message: "unknown"};
    var state = !plan.published ? "none" : (plan.stale ? "stale" : "fresh");
    box.setAttribute("data-state", state);
    var label = {none: "not published", stale: "stale", fresh: "up to date"}[state];
    box.appendChild(node("span", label, "badge " + (state === "fresh" ? "ok" : state)));
    box.appendChild(node("p", plan.message || ""));
    if (!plan.published) { return; }
    var details = node("dl");
    [["Published", utc(plan.published_at) + (plan.published_at ? " (" + ago(plan.published_at) + ")" : "")],
      ["Data up to", utc(plan.data_interval_end)], ["Entities", plan.entities], ["Series", plan.series],
      ["Windows sized", (plan.sized === undefined ? "–" : plan.sized) + " of " + (plan.windows || 0)],
      ["First window", utc(plan.first_window)]].forEach(function (pair) {
      details.appendChild(node("dt", pair[0]));
      details.appendChild(node("dd", pair[1] === undefined || pair[1] === null ? "–" : pair[1]));
    });
    box.appendChild(details);
  }

  function cellText(column, value) {
    if (value === null || value === undefined || value === "") { return "–"; }
    if (column === "period_start" || column === "period_end") { return utc(value); }
    if (column === "confidence") { return number(value, 2); }
    return String(value);
  }

  function renderRecommendations() {
    var data = view.overview || {};
    var recs = data.recommendations;
    var table = byId("recommendations");
    var note = byId("recommendations-note");
    clear(table);
    if (!recs) {
      note.textContent = "No recommendations published yet: the nightly run publishes them.";
      return;
    }
    var all = byId("recommendations-all").checked;
    var entity = byId("entity").value;
    var columns = recs.columns || [];
    var rows = (recs.rows || []).filter(function (row) { return all || !entity || row.entity === entity; });
    headerRow(table, columns.map(function (c) { return LABELS[c] || c; }), function (i) {
      return columns[i] === "replicas" || columns[i] === "confidence";
    });
    var body = node("tbody");
    rows.slice(0, MAX_RECOMMENDATIONS).forEach(function (entry) {
      var row = node("tr");
      columns.forEach(function (c) {
        row.appendChild(node("td", cellText(c, entry[c]), c === "replicas" || c === "confidence" ? "num" : ""));
      });
      body.appendChild(row);
    });
    if (!rows.length) { emptyRow(body, Math.max(columns.length, 1), "No recommendation for this entity."); }
    table.appendChild(body);
    note.textContent = "Showing " + Math.min(rows.length, MAX_RECOMMENDATIONS) + " of " + rows.length +
      (all || !entity ? " recommendations" : " recommendations for " + entity) +
      (recs.truncated ? " (the first " + (recs.rows || []).length + " of " + recs.count + " published)" : "");
  }

  function fill(select, values, label) {
    var previous = select.value;
    clear(select);
    values.forEach(function (value) {
      var option = node("option", label ? label(value) : value);
      option.value = value;
      select.appendChild(option);
    });
    if (values.indexOf(previous) >= 0) { select.value = previous; }
    select.disabled = values.length === 0;
  }

  function unique(values) {
    var seen = {};
    return values.filter(function (v) { if (seen[v]) { return false; } seen[v] = true; return true; });
  }

  function onMetric() {
    var metric = byId("metric").value;
    var series = (view.overview && view.overview.series) || [];
    fill(byId("entity"), unique(series.filter(function (s) { return s.metric === metric; })
      .map(function (s) { return s.entity; })));
    onEntity();
  }

  function onEntity() {
    var metric = byId("metric").value;
    var entity = byId("entity").value;
    var series = (view.overview && view.overview.series) || [];
    fill(byId("series"), series.filter(function (s) { return s.metric === metric && s.entity === entity; })
      .map(function (s) { return s.unique_id; }));
    renderRecommendations();
    draw();
  }

  function chartMessage(text) {
    var chart = byId("forecast-chart");
    if (window.Plotly && chart.classList.contains("js-plotly-plot")) { window.Plotly.purge(chart); }
    clear(chart);
    chart.appendChild(node("div", text, "message"));
    byId("chart-note").textContent = "";
  }

  function draw() {
    var uid = byId("series").value;
    var token = ++view.token;
    if (!uid) { chartMessage("No series to chart."); return; }
    if (!window.Plotly) {
      chartMessage("The charting library did not load from " + PREFIX + "/static/plotly.min.js.");
      return;
    }
    getJSON("/series?series=" + encodeURIComponent(uid)).then(function (series) {
      if (token === view.token) { return plot(series); }
      return null;
    }).catch(function (error) {
      if (token === view.token) { chartMessage("Cannot chart " + uid + ": " + error.message); }
    });
  }

  function plot(series) {
    var chart = byId("forecast-chart");
    var forecast = series.forecast || [];
    var actuals = series.actuals || [];
    var hours = Number(byId("history").value) || 24;
    var last = actuals.length ? Date.parse(actuals[actuals.length - 1].ds) : NaN;
    if (isFinite(last)) {
      actuals = actuals.filter(function (r) { return Date.parse(r.ds) > last - hours * 3600000; });
    }
    var fx = forecast.map(function (r) { return plotTime(r.ds); });
    var traces = [];
    (series.levels || []).slice().sort(function (a, b) { return Number(b) - Number(a); }).forEach(function (level) {
      var name = level + " % interval";
      traces.push({x: fx, y: forecast.map(function (r) { return r["yhat_hi_" + level]; }), type: "scatter",
        mode: "lines", line: {width: 0}, hoverinfo: "skip", showlegend: false, legendgroup: name});
      traces.push({x: fx, y: forecast.map(function (r) { return r["yhat_lo_" + level]; }), type: "scatter",
        mode: "lines", line: {width: 0}, fill: "tonexty", fillcolor: BAND_COLORS[level] || "rgba(37,99,235,0.18)",
        name: name, legendgroup: name, hoverinfo: "skip"});
    });
    traces.push({x: actuals.map(function (r) { return plotTime(r.ds); }),
      y: actuals.map(function (r) { return r.y; }), type: "scatter", mode: "lines", name: "actual",
      line: {color: "#1d2430", width: 1.5}});
    traces.push({x: fx, y: forecast.map(function (r) { return r.yhat; }), type: "scatter", mode: "lines+markers",
      name: "forecast (" + series.model + ")", line: {color: "#2563eb", width: 2, dash: "dash"},
      marker: {size: 5}});
    var points = traces.reduce(function (sum, t) { return sum + t.x.length; }, 0);
    var layout = {
      margin: {l: 64, r: 16, t: 8, b: 40}, hovermode: "x unified", paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#fff", legend: {orientation: "h", y: -0.15},
      xaxis: {type: "date", title: {text: "time (UTC)"}, gridcolor: "#eef1f5"},
      yaxis: {title: {text: series.metric}, gridcolor: "#eef1f5"},
      shapes: series.cutoff ? [{type: "line", xref: "x", yref: "paper", x0: plotTime(series.cutoff),
        x1: plotTime(series.cutoff), y0: 0, y1: 1, line: {color: "#9aa4b2", width: 1, dash: "dot"}}] : []
    };
    if (chart.querySelector(".message")) { clear(chart); }
    return window.Plotly.react(chart, traces, layout, {
      responsive: true, displaylogo: false, showLink: false, showSendToCloud: false, showEditInChartStudio: false,
      modeBarButtonsToRemove: ["lasso2d", "select2d"]})
      .then(function () {
        chart.setAttribute("data-series", series.unique_id);
        chart.setAttribute("data-points", String(points));
        chart.setAttribute("data-ready", "true");
        byId("chart-title").textContent = series.unique_id;
        byId("chart-note").textContent = (series.champion ? "Champion " : "Model ") + series.model +
          ", forecast from " + utc(series.cutoff) + "; " + actuals.length + " actuals, " + forecast.length +
          " forecast steps" + ((series.levels || []).length ? ", " + series.levels.join(" and ") + " % bands" : "") + ".";
      });
  }

  function render(data) {
    view.overview = data;
    renderHeader(data);
    showErrors(data.errors);
    byId("empty-state").hidden = Boolean(data.published);
    byId("empty-message").textContent = data.message || "";
    Array.prototype.forEach.call(document.querySelectorAll("[data-needs-publish]"), function (section) {
      section.hidden = !data.published;
    });
    renderPlan(data.plan);
    renderChampions(data);
    renderLeaderboard(data);
    fill(byId("metric"), data.metrics || []);
    if (data.published) { onMetric(); } else { renderRecommendations(); }
  }

  function start() {
    byId("metric").addEventListener("change", onMetric);
    byId("entity").addEventListener("change", onEntity);
    byId("series").addEventListener("change", draw);
    byId("history").addEventListener("change", draw);
    byId("recommendations-all").addEventListener("change", renderRecommendations);
    getJSON("/overview").then(render).catch(function (error) {
      byId("published-at").textContent = "unknown";
      showErrors(["Cannot load " + PREFIX + "/overview: " + error.message], "The dashboard cannot load:");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
