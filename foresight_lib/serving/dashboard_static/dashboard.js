/* Foresight dashboard: reads <prefix>/overview and <prefix>/series, draws with the bundled Plotly.js.
 *
 * A large fleet's series are not all in the overview (series_truncated): the entity select then
 * offers a page of <prefix>/series/search (the metric's series whose id contains the search box's
 * text), and an entity's recommendations beyond the overview's come from <prefix>/recommendations.
 *
 * Every text from the server is inserted with textContent; only the plugin's own URLs are requested.
 */
(function () {
  "use strict";

  var PREFIX = (document.body.getAttribute("data-prefix") || "/foresight").replace(/\/+$/, "");
  var MAX_RECOMMENDATIONS = 500;
  var SEARCH_LIMIT = 200;
  var SEARCH_DELAY_MS = 250;
  var LABELS = {
    entity: "Entity", metric: "Metric", resource: "Resource", kind: "Kind", lead: "Lead",
    period_start: "From", period_end: "To", request_display: "Request", limit_display: "Limit",
    replicas: "Replicas", confidence: "Confidence", model: "Model", reason: "Reason"
  };
  var BAND_COLORS = {"80": "rgba(37, 99, 235, 0.28)", "95": "rgba(37, 99, 235, 0.13)"};
  var BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  /* The page asks for /overview again this often (seconds; ?refresh=N in the URL changes it, 0 stops it). */
  var REFRESH_S = (function () {
    var asked = Number(new URLSearchParams(window.location.search).get("refresh"));
    return isFinite(asked) && asked >= 0 && window.location.search.indexOf("refresh=") >= 0 ? asked : 60;
  }());
  var view = {overview: null, token: 0, signature: null, series: [], seriesCount: 0, search: 0, recs: 0};

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

  function dataAge(fresh) {
    if (fresh.data_age_s === undefined || fresh.data_age_s === null) { return "–"; }
    var minutes = Math.round(fresh.data_age_s / 60);
    var text = minutes < 120 ? minutes + " min" : Math.round(minutes / 60) + " h";
    text += " (last point " + utc(fresh.last_timestamp) + ")";
    if (fresh.series_stale) { text += "; " + fresh.series_stale + " stale series quarantined"; }
    return text;
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

  /* How values of a unit are shown: bytes and bytes/s in binary multiples picked by the largest value. */
  function scaleFor(unit, largest) {
    var parts = String(unit || "").split("/");
    if (parts[0] === "bytes") {
      var power = 0;
      var value = Math.abs(largest || 0);
      while (value >= 1024 && power < BINARY.length - 1) { value /= 1024; power += 1; }
      return {factor: Math.pow(1024, power), label: BINARY[power] + (parts[1] ? "/" + parts[1] : "")};
    }
    return {factor: 1, label: unit || ""};
  }

  /* One value with its unit as people read it: 1.07 GiB, 5.57 MiB/s, 0.25 cores. */
  function quantity(value, unit) {
    if (!isNumber(value)) { return "–"; }
    var scale = scaleFor(unit, value);
    return Number((value / scale.factor).toPrecision(3)) + (scale.label ? " " + scale.label : "");
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
    byId("data-age").textContent = dataAge(data.data_freshness || {});
    byId("run-id").textContent = run.airflow_run_id || run.run_key || "–";
    byId("data-root").textContent = data.data_root || "–";
    ["published-at", "data-interval", "data-age", "run-id", "data-root"].forEach(function (id) {
      byId(id).title = byId(id).textContent;  /* shortened with an ellipsis when the frame is narrow */
    });
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

  function activationText(a) {
    return a.metric + ": v" + a.version + (a.model ? " (" + a.model + ")" : "") + " activated by " + (a.by || "?") +
      " at " + utc(a.at) + (a.previous_version === null || a.previous_version === undefined
        ? "" : ", replacing v" + a.previous_version);
  }

  function renderActivations(data) {
    var box = byId("activations");
    var list = box.querySelector("ul");
    clear(list);
    (data.activations || []).forEach(function (a) { list.appendChild(node("li", activationText(a))); });
    box.hidden = list.childNodes.length === 0;
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
      row.setAttribute("data-metric", champion.metric);
      row.appendChild(node("td", champion.metric));
      var model = node("td");
      model.appendChild(node("span", champion.model || "unknown", champion.model ? "badge champion" : "badge none"));
      if (champion.activation) {
        var mark = node("span", "activated", "badge activated");
        mark.title = activationText(champion.activation);
        model.appendChild(document.createTextNode(" "));
        model.appendChild(mark);
      }
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

  /* Scores shown per horizon beside MASE, where the publish has them; they never rank the models. */
  var BESIDE_MASE = [
    {key: "wql", label: "wQL", format: function (v) { return number(v); },
     title: "Weighted quantile loss over the median and the 80 % and 95 % bounds (a CRPS approximation; " +
       "lower is better)"},
    {key: "coverage_80", label: "Coverage 80 %", format: percent,
     title: "Share of actuals inside the 80 % interval (80 % is calibrated)"},
    {key: "coverage_95", label: "Coverage 95 %", format: percent,
     title: "Share of actuals inside the 95 % interval (95 % is calibrated)"}
  ];

  function percent(value) { return isNumber(value) ? (100 * value).toFixed(1) + " %" : "–"; }

  function hasScores(rows, key) {
    return rows.some(function (entry) {
      var values = entry[key] || {};
      return Object.keys(values).some(function (h) { return isNumber(values[h]); });
    });
  }

  /* Two header rows: a group per score (MASE with the champion score, then the others), its horizons below. */
  function leaderboardHeader(table, horizons, extras, data) {
    var head = node("thead");
    var groups = node("tr");
    var model = node("th", "Model");
    model.rowSpan = 2;
    groups.appendChild(model);
    var mase = node("th", "MASE", "num group");
    mase.colSpan = horizons.length + 1;
    groups.appendChild(mase);
    extras.forEach(function (extra) {
      var cell = node("th", extra.label, "num group");
      cell.colSpan = horizons.length;
      cell.title = extra.title;
      groups.appendChild(cell);
    });
    var names = node("tr");
    horizons.concat([scoreLabel(data)]).forEach(function (name) { names.appendChild(node("th", name, "num")); });
    extras.forEach(function (extra) {
      horizons.forEach(function (h) { names.appendChild(node("th", h, "num")); });
    });
    head.appendChild(groups);
    head.appendChild(names);
    table.appendChild(head);
  }

  function renderLeaderboard(data) {
    var table = byId("leaderboard");
    var horizons = data.horizons || [];
    var rows = data.leaderboard || [];
    var extras = BESIDE_MASE.filter(function (extra) { return hasScores(rows, extra.key); });
    var columns = 2 + horizons.length * (1 + extras.length);
    clear(table);
    byId("leaderboard-scope").textContent = (data.leaderboard_scope === "all"
      ? "MASE per model and horizon over every metric (no per-metric scores were published)"
      : "MASE per model and horizon, per metric; the champion is highlighted") +
      (extras.length ? "; the weighted quantile loss (wQL) and interval coverage beside it" : "");
    leaderboardHeader(table, horizons, extras, data);
    var body = node("tbody");
    var current = null;
    rows.forEach(function (entry) {
      var group = entry.metric || "all metrics";
      if (current !== group) {
        current = group;
        var heading = node("tr", null, "group");
        var cell = node("td", group);
        cell.colSpan = columns;
        heading.appendChild(cell);
        body.appendChild(heading);
      }
      var row = node("tr", null, entry.champion ? "champion" : "");
      var name = node("td", entry.model + " ");
      if (entry.champion) { name.appendChild(node("span", "champion", "badge champion")); }
      row.appendChild(name);
      horizons.forEach(function (h) { row.appendChild(maseCell((entry.mase || {})[h])); });
      row.appendChild(maseCell(scoreOf(entry)));
      extras.forEach(function (extra) {
        horizons.forEach(function (h) {
          var cell = node("td", extra.format((entry[extra.key] || {})[h]), "num");
          cell.setAttribute("data-score", extra.key);
          row.appendChild(cell);
        });
      });
      body.appendChild(row);
    });
    if (!rows.length) { emptyRow(body, columns, "No leaderboard published."); }
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

  /* Columns whose cells may wrap: names only after a separator, times at their space, reasons anywhere. */
  var WRAPPED = {entity: "name", metric: "name", period_start: "time", period_end: "time", reason: "reason"};

  /* Text with a line-break opportunity (<wbr>) after each / _ - of a name, so that a name never breaks mid-word. */
  function appendBreakable(cell, text, isName) {
    if (!isName) { cell.textContent = text; return; }
    String(text).split(/(?<=[\/_-])/).forEach(function (part, i) {
      if (i > 0) { cell.appendChild(document.createElement("wbr")); }
      cell.appendChild(document.createTextNode(part));
    });
  }

  function sizingNote(recs) {
    var models = recs.models || [];
    var profiles = recs.profiles || [];
    return "Sized from the upper forecast bound of " + (models.length ? models.join(", ") : "the champion") +
      (profiles.length ? " with the " + profiles.join(", ") + " profile" : "") +
      ", the reason given per row. CPU and memory rows are container requests and limits (Kubernetes " +
      "quantities); network and disk rows are the capacity to plan, with no limit or replica count. ";
  }

  function renderRecommendations() {
    var data = view.overview || {};
    var recs = data.recommendations;
    byId("sizing-note").textContent = recs ? sizingNote(recs) : "";
    if (!recs) {
      clear(byId("recommendations"));
      byId("recommendations-note").textContent = "No recommendations published yet: the nightly run publishes them.";
      return;
    }
    var all = byId("recommendations-all").checked;
    var entity = byId("entity").value;
    var token = ++view.recs;
    if (!recs.truncated || all || !entity) {
      drawRecommendations(recs, (recs.rows || []).filter(function (row) {
        return all || !entity || row.entity === entity;
      }), all || !entity, recs.truncated ? " (the first " + (recs.rows || []).length + " of " + recs.count +
        " published)" : "");
      return;
    }
    /* more were published than the overview carries: ask for this entity's */
    getJSON("/recommendations?entity=" + encodeURIComponent(entity) + "&limit=" + MAX_RECOMMENDATIONS)
      .then(function (page) {
        if (token === view.recs) { drawRecommendations(recs, page.recommendations || [], false, ""); }
      }).catch(function (error) {
        if (token === view.recs) { byId("recommendations-note").textContent = error.message; }
      });
  }

  function drawRecommendations(recs, rows, all, more) {
    var table = byId("recommendations");
    var note = byId("recommendations-note");
    var entity = byId("entity").value;
    var columns = recs.columns || [];
    clear(table);
    headerRow(table, columns.map(function (c) { return LABELS[c] || c; }), function (i) {
      return columns[i] === "replicas" || columns[i] === "confidence";
    });
    var body = node("tbody");
    rows.slice(0, MAX_RECOMMENDATIONS).forEach(function (entry) {
      var row = node("tr");
      columns.forEach(function (c) {
        var cell = node("td", null, c === "replicas" || c === "confidence" ? "num" : (WRAPPED[c] || ""));
        appendBreakable(cell, cellText(c, entry[c]), c === "entity" || c === "metric");
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
    if (!rows.length) { emptyRow(body, Math.max(columns.length, 1), "No recommendation for this entity."); }
    table.appendChild(body);
    note.textContent = "Showing " + Math.min(rows.length, MAX_RECOMMENDATIONS) + " of " + rows.length +
      (all ? " recommendations" : " recommendations for " + entity) + more;
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

  /* The metric's series matching the search box: from the overview when it lists them all, else searched. */
  function onMetric() {
    var data = view.overview || {};
    var metric = byId("metric").value;
    var q = byId("entity-search").value.trim();
    var token = ++view.search;
    if (!data.series_truncated) {
      var lower = q.toLowerCase();
      view.series = (data.series || []).filter(function (s) {
        return s.metric === metric && (!lower || s.unique_id.toLowerCase().indexOf(lower) >= 0);
      });
      view.seriesCount = view.series.length;
      showSeries();
      return;
    }
    getJSON("/series/search?metric=" + encodeURIComponent(metric) + "&q=" + encodeURIComponent(q) +
      "&limit=" + SEARCH_LIMIT).then(function (found) {
      if (token !== view.search) { return; }
      view.series = found.series || [];
      view.seriesCount = found.count || 0;
      showSeries();
    }).catch(function (error) {
      if (token === view.search) { chartMessage("Cannot search the series: " + error.message); }
    });
  }

  function showSeries() {
    fill(byId("entity"), unique(view.series.map(function (s) { return s.entity; })));
    byId("entity-count").textContent = view.seriesCount > view.series.length
      ? view.series.length + " of " + view.seriesCount + " series: narrow the search" : "";
    onEntity();
  }

  function onEntity() {
    renderRecommendations();
    draw();
  }

  function seriesId() {
    var metric = byId("metric").value;
    var entity = byId("entity").value;
    var found = view.series.filter(function (s) { return s.metric === metric && s.entity === entity; })[0];
    return found ? found.unique_id : "";
  }

  function chartMessage(text) {
    var chart = byId("forecast-chart");
    if (window.Plotly && chart.classList.contains("js-plotly-plot")) { window.Plotly.purge(chart); }
    clear(chart);
    chart.appendChild(node("div", text, "message"));
    byId("chart-note").textContent = "";
  }

  function draw(keepModel) {
    var uid = seriesId();
    var model = keepModel === true ? byId("model").value : "";
    var token = ++view.token;
    if (!uid) { chartMessage("No series to chart."); return; }
    if (!window.Plotly) {
      chartMessage("The charting library did not load from " + PREFIX + "/static/plotly.min.js.");
      return;
    }
    getJSON("/series?series=" + encodeURIComponent(uid) + (model ? "&model=" + encodeURIComponent(model) : ""))
      .then(function (series) {
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
    var unit = (view.overview && view.overview.units || {})[series.metric] || "";
    var largest = 0;
    actuals.forEach(function (r) { if (isNumber(r.y)) { largest = Math.max(largest, Math.abs(r.y)); } });
    forecast.forEach(function (r) { if (isNumber(r.yhat)) { largest = Math.max(largest, Math.abs(r.yhat)); } });
    var scale = scaleFor(unit, largest);
    function scaled(value) { return isNumber(value) ? value / scale.factor : null; }
    var hover = "%{y:.3~f}" + (scale.label ? " " + scale.label : "");
    var fx = forecast.map(function (r) { return plotTime(r.ds); });
    var traces = [];
    (series.levels || []).slice().sort(function (a, b) { return Number(b) - Number(a); }).forEach(function (level) {
      var name = level + " % interval";
      traces.push({x: fx, y: forecast.map(function (r) { return scaled(r["yhat_hi_" + level]); }), type: "scatter",
        mode: "lines", line: {width: 0}, hoverinfo: "skip", showlegend: false, legendgroup: name});
      traces.push({x: fx, y: forecast.map(function (r) { return scaled(r["yhat_lo_" + level]); }), type: "scatter",
        mode: "lines", line: {width: 0}, fill: "tonexty", fillcolor: BAND_COLORS[level] || "rgba(37,99,235,0.18)",
        name: name, legendgroup: name, hoverinfo: "skip"});
    });
    traces.push({x: actuals.map(function (r) { return plotTime(r.ds); }),
      y: actuals.map(function (r) { return scaled(r.y); }), type: "scatter", mode: "lines", name: "actual",
      line: {color: "#1d2430", width: 1.5}, hovertemplate: hover});
    traces.push({x: fx, y: forecast.map(function (r) { return scaled(r.yhat); }), type: "scatter",
      mode: "lines+markers", name: "forecast (" + series.model + ")", line: {color: "#2563eb", width: 2, dash: "dash"},
      marker: {size: 5}, hovertemplate: hover});
    var points = traces.reduce(function (sum, t) { return sum + t.x.length; }, 0);
    var layout = {
      margin: {l: 64, r: 16, t: 8, b: 40}, hovermode: "x unified", paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#fff", legend: {orientation: "h", y: -0.15},
      xaxis: {type: "date", title: {text: "time (UTC)"}, gridcolor: "#eef1f5"},
      yaxis: {title: {text: scale.label || series.metric}, gridcolor: "#eef1f5", exponentformat: "none"},
      shapes: series.cutoff ? [{type: "line", xref: "x", yref: "paper", x0: plotTime(series.cutoff),
        x1: plotTime(series.cutoff), y0: 0, y1: 1, line: {color: "#9aa4b2", width: 1, dash: "dot"}}] : []
    };
    if (chart.querySelector(".message")) { clear(chart); }
    return window.Plotly.react(chart, traces, layout, {
      responsive: true, displaylogo: false, showLink: false, showSendToCloud: false, showEditInChartStudio: false,
      modeBarButtonsToRemove: ["lasso2d", "select2d"]})
      .then(function () {
        chart.setAttribute("data-series", series.unique_id);
        chart.setAttribute("data-model", series.model);
        chart.setAttribute("data-unit", scale.label);
        fill(byId("model"), series.models || [], function (m) {
          return m === series.model && series.champion ? m + " (champion)" : m;
        });
        byId("model").value = series.model;
        chart.setAttribute("data-points", String(points));
        chart.setAttribute("data-ready", "true");
        byId("chart-title").textContent = series.unique_id;
        byId("chart-note").textContent = (series.champion ? "Champion " : "Model ") + series.model +
          ", forecast from " + utc(series.cutoff) + "; " + actuals.length + " actuals, " + forecast.length +
          " forecast steps" + ((series.levels || []).length ? ", " + series.levels.join(" and ") + " % bands" : "") + ".";
      });
  }

  /* What a refresh must redraw for: a publish, an activation, the plan's state, an error, the DAG's state. */
  function signature(data) {
    var plan = data.plan || {};
    return JSON.stringify([data.published_at, data.activations, data.champions, plan.published_at, plan.stale,
      data.errors, data.dag]);
  }

  function refresh() {
    getJSON("/overview").then(function (data) {
      if (signature(data) !== view.signature) {
        render(data);
      } else {  /* ages only: the chart and the chosen model stay as they are */
        renderHeader(data);
        renderPlan(data.plan);
      }
    }).catch(function () { return null; });  /* the next refresh tries again; the page keeps what it shows */
  }

  function render(data) {
    view.overview = data;
    view.signature = signature(data);
    renderActivations(data);
    byId("dag-state").textContent = (data.dag && data.dag.message) || "";
    byId("dag-state").hidden = !(data.dag && data.dag.message);
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
    var typing = null;
    byId("entity-search").addEventListener("input", function () {
      window.clearTimeout(typing);
      typing = window.setTimeout(onMetric, SEARCH_DELAY_MS);
    });
    byId("model").addEventListener("change", function () { draw(true); });
    byId("history").addEventListener("change", function () { draw(true); });
    byId("recommendations-all").addEventListener("change", renderRecommendations);
    getJSON("/overview").then(render).catch(function (error) {
      byId("published-at").textContent = "unknown";
      showErrors(["Cannot load " + PREFIX + "/overview: " + error.message], "The dashboard cannot load:");
    });
    if (REFRESH_S > 0) { window.setInterval(refresh, REFRESH_S * 1000); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
