// The admin console's live charts (portal/admin_metrics.py; docs/architecture.md, "Pages").
// Every few seconds: GET /admin/charts.json, every process's running totals (requests,
// and the seconds and count of the timed ones).  Two snapshots make a rate and a mean
// latency; the last POINTS of each are drawn as an SVG sparkline in the process's row.
// No chart library: a polyline in a 120x32 box.
(function () {
  "use strict";
  var POINTS = 40;
  var EVERY_MS = 3000;
  var SVG = "http://www.w3.org/2000/svg";
  var table = document.getElementById("charts");
  if (!table) {
    return;
  }
  var source = table.getAttribute("data-source");
  var last = {};     // process name -> its previous totals and time
  var history = {};  // process name -> {rate: [...], latency: [...]}

  function spark(cell, values, label) {
    var width = 120, height = 32;
    var top = Math.max.apply(null, values.concat([1e-9]));
    var svg = cell.querySelector("svg");
    if (!svg) {
      svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      svg.setAttribute("width", width);
      svg.setAttribute("height", height);
      svg.setAttribute("role", "img");
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", "currentColor");
      line.setAttribute("stroke-width", "1.5");
      svg.appendChild(line);
      cell.querySelector(".spark").appendChild(svg);
    }
    var step = width / (POINTS - 1);
    var start = POINTS - values.length;
    var points = values.map(function (v, i) {
      return ((start + i) * step).toFixed(1) + "," + (height - 2 - (v / top) * (height - 4)).toFixed(1);
    });
    svg.querySelector("polyline").setAttribute("points", points.join(" "));
    svg.setAttribute("aria-label", label);
  }

  function show(row, name, now, process) {
    var rateCell = row.querySelector("td.rate");
    var latencyCell = row.querySelector("td.latency");
    row.querySelector("td.state").textContent = process.up ? "up" : "not answering";
    var before = last[name];
    last[name] = { time: now, requests: process.requests, seconds: process.seconds,
                   timed: process.timed };
    if (!process.up || !before || before.requests === null || process.requests === null) {
      return;
    }
    var elapsed = Math.max(now - before.time, 1e-3);
    var rate = Math.max(process.requests - before.requests, 0) / elapsed;
    var timed = (process.timed || 0) - (before.timed || 0);
    var latency = timed > 0 ? 1000 * ((process.seconds || 0) - (before.seconds || 0)) / timed : 0;
    var kept = history[name] || (history[name] = { rate: [], latency: [] });
    kept.rate = kept.rate.concat([rate]).slice(-POINTS);
    kept.latency = kept.latency.concat([latency]).slice(-POINTS);
    rateCell.querySelector(".now").textContent = rate.toFixed(1) + " /s";
    spark(rateCell, kept.rate, name + ": requests per second, now " + rate.toFixed(1));
    if (process.timed !== null && process.timed !== undefined) {
      latencyCell.querySelector(".now").textContent = latency.toFixed(1) + " ms";
      spark(latencyCell, kept.latency, name + ": mean latency, now " + latency.toFixed(1) + " ms");
    }
  }

  function refresh() {
    fetch(source, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (body) {
        if (!body || !body.enabled) {
          return;
        }
        body.processes.forEach(function (process) {
          var row = table.querySelector('tr[data-process="' + CSS.escape(process.name) + '"]');
          if (row) {
            show(row, process.name, body.time, process);
          }
        });
        table.setAttribute("data-updated", String(body.time));
      })
      .catch(function () { /* the next round tries again */ })
      .then(function () { window.setTimeout(refresh, EVERY_MS); });
  }

  refresh();
}());
