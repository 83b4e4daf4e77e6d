// Health page: polls the snapshot every 2 s and keeps the last 5 minutes of them. Rates and
// percentiles are computed here from the differences between the oldest and newest snapshot
// (counters and histogram buckets are cumulative), so the server keeps no history.
(function () {
  "use strict";
  var EVERY = 2000, KEEP = 150; // 150 × 2 s = 5 minutes
  var snaps = [];
  var C = window.ConsoleCharts;
  var $ = function (id) { return document.getElementById(id); };

  function total(byStatus) {
    return Object.keys(byStatus).reduce(function (s, k) { return s + byStatus[k]; }, 0);
  }

  // Cumulative [le, count] buckets, newer minus older: the q-quantile in seconds, interpolated.
  function quantile(newer, older, q) {
    var before = {};
    (older || []).forEach(function (b) { before[b[0]] = b[1]; });
    var deltas = newer.map(function (b) {
      return [b[0] === "+Inf" ? Infinity : b[0], b[1] - (before[b[0]] || 0)];
    });
    var count = deltas.length ? deltas[deltas.length - 1][1] : 0;
    if (count <= 0) return null;
    var rank = q * count, lower = 0, prev = 0;
    for (var i = 0; i < deltas.length; i++) {
      var le = deltas[i][0], c = deltas[i][1];
      if (c >= rank) {
        if (!isFinite(le)) return lower;
        var span = c - prev;
        return span > 0 ? lower + (le - lower) * ((rank - prev) / span) : le;
      }
      lower = isFinite(le) ? le : lower;
      prev = c;
    }
    return lower;
  }

  function ms(seconds) {
    if (seconds == null) return "–";
    return seconds < 1 ? Math.round(seconds * 1000) + " ms" : seconds.toFixed(2) + " s";
  }

  function row(tbody, cells, cls) {
    var tr = document.createElement("tr");
    cells.forEach(function (text, i) {
      var td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = text;
      if (cls && cls[i]) td.className = cls[i];
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }

  function render() {
    var last = snaps[snaps.length - 1], first = snaps[0];
    var span = last.at - first.at;
    $("window").textContent = span >= 60 ? Math.round(span / 60) + " min" : Math.round(span) + " s";
    $("streams").textContent = last.streams_open;
    $("inflight").textContent = last.in_flight;
    $("upstream-inflight").textContent = last.upstream_in_flight;
    var rps = span > 0 ? (total(last.requests_by_status) - total(first.requests_by_status)) / span : null;
    $("rps").textContent = rps == null ? "–" : rps.toFixed(2);
    $("latency").textContent = ms(quantile(last.duration_buckets, first.duration_buckets, 0.5)) + " / " +
      ms(quantile(last.duration_buckets, first.duration_buckets, 0.99));
    $("ttft").textContent = ms(quantile(last.ttft_buckets, first.ttft_buckets, 0.5)) + " / " +
      ms(quantile(last.ttft_buckets, first.ttft_buckets, 0.99));

    var statusBody = $("status-table").tBodies[0];
    statusBody.textContent = "";
    Object.keys(last.requests_by_status).forEach(function (status) {
      var n = last.requests_by_status[status] - (first.requests_by_status[status] || 0);
      if (n > 0) row(statusBody, [status, String(n), span > 0 ? (n / span).toFixed(2) : "–"], [null, "num", "num"]);
    });
    if (!statusBody.rows.length) row(statusBody, ["–", "no API requests in the window", ""]);

    var keysBody = $("upstream-keys").tBodies[0];
    keysBody.textContent = "";
    last.upstream_keys.forEach(function (k) {
      var state = k.state === "resting"
        ? "resting until " + new Date(k.resting_until * 1000).toLocaleTimeString()
        : k.state;
      row(keysBody, [k.key, state], [null, "state state-" + k.state]);
    });

    // Sparklines: per-interval requests/s and p50/p99 latency.
    var rpsLine = [], p50 = [], p99 = [];
    for (var i = 1; i < snaps.length; i++) {
      var dt = snaps[i].at - snaps[i - 1].at;
      rpsLine.push(dt > 0 ? (total(snaps[i].requests_by_status) - total(snaps[i - 1].requests_by_status)) / dt : null);
      p50.push(quantile(snaps[i].duration_buckets, snaps[i - 1].duration_buckets, 0.5));
      p99.push(quantile(snaps[i].duration_buckets, snaps[i - 1].duration_buckets, 0.99));
    }
    C.lines($("chart-rps"), [{ values: rpsLine, color: C.palette[0] }]);
    C.lines($("chart-latency"), [{ values: p50, color: C.palette[1] }, { values: p99, color: C.palette[2] }]);
  }

  function poll() {
    fetch("/console/api/health", { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.assign("/console/signin"); throw new Error("signed out"); }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (snap) {
        snaps.push(snap);
        if (snaps.length > KEEP) snaps.shift();
        render();
        $("health-status").textContent = "updated " + new Date(snap.at * 1000).toLocaleTimeString() +
          (snap.workers > 1 ? " · " + snap.workers + " workers" : "");
      })
      .catch(function (error) { $("health-status").textContent = "cannot refresh: " + error.message; })
      .finally(function () { setTimeout(poll, EVERY); });
  }
  poll();
})();
