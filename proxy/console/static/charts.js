// Two small SVG charts, drawn with presentation attributes only (the CSP allows no inline style):
// stacked bars (usage per day by model) and lines (health over the last minutes).
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#b4532a", "#1a7f8e", "#7a5cc2", "#5f8f2a", "#c2407a", "#9a6700", "#3d6fb4", "#8a8a80"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function nice(max) {
    if (max <= 0) return 1;
    var step = Math.pow(10, Math.floor(Math.log10(max)));
    var m = max / step;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * step;
  }

  function short(v) {
    if (v >= 1e9) return (v / 1e9).toFixed(1).replace(/\.0$/, "") + "G";
    if (v >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    if (v > 0 && v < 1) return v.toPrecision(2);
    return String(Math.round(v * 100) / 100);
  }

  function frame(container, height) {
    container.textContent = "";
    var width = Math.max(container.clientWidth, 280);
    var svg = el("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none" }, container);
    return { svg: svg, width: width, height: height };
  }

  // series: [{name, values: [..per x..], color}], labels: x labels
  function stacked(container, labels, series, opts) {
    opts = opts || {};
    var f = frame(container, opts.height || 200);
    var left = 62, bottom = 20, top = 8;
    var plotW = f.width - left - 6, plotH = f.height - top - bottom;
    var totals = labels.map(function (_, i) {
      return series.reduce(function (sum, s) { return sum + (s.values[i] || 0); }, 0);
    });
    var max = nice(Math.max.apply(null, totals.concat([0])));
    for (var g = 0; g <= 4; g++) {
      var y = top + plotH - (plotH * g) / 4;
      el("line", { x1: left, x2: f.width - 6, y1: y, y2: y, class: "grid" }, f.svg);
      el("text", { x: left - 4, y: y + 3, "text-anchor": "end", class: "axis" }, f.svg).textContent =
        (opts.prefix || "") + short((max * g) / 4);
    }
    var slot = plotW / labels.length, barW = Math.max(slot * 0.7, 1);
    labels.forEach(function (label, i) {
      var base = top + plotH, x = left + i * slot + (slot - barW) / 2;
      series.forEach(function (s) {
        var v = s.values[i] || 0;
        if (!v) return;
        var h = (plotH * v) / max;
        var rect = el("rect", { x: x, y: base - h, width: barW, height: h, fill: s.color }, f.svg);
        el("title", {}, rect).textContent = label + " · " + s.name + ": " + (opts.prefix || "") + v.toLocaleString();
        base -= h;
      });
      if (i % 5 === 0 || i === labels.length - 1) {
        el("text", { x: left + i * slot + slot / 2, y: f.height - 5, "text-anchor": "middle", class: "axis" }, f.svg)
          .textContent = label.slice(5);
      }
    });
  }

  // lines: [{values: [numbers or null], color}], all the same length
  function lines(container, lineSet, opts) {
    opts = opts || {};
    var f = frame(container, opts.height || 48);
    var n = Math.max.apply(null, lineSet.map(function (l) { return l.values.length; }).concat([2]));
    var all = [].concat.apply([], lineSet.map(function (l) { return l.values.filter(function (v) { return v != null; }); }));
    var max = nice(Math.max.apply(null, all.concat([0])));
    lineSet.forEach(function (l) {
      var points = [];
      l.values.forEach(function (v, i) {
        if (v == null) return;
        var x = (f.width * i) / (n - 1), y = f.height - 2 - ((f.height - 4) * v) / max;
        points.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      if (points.length > 1) {
        el("polyline", { points: points.join(" "), fill: "none", stroke: l.color, "stroke-width": 2 }, f.svg);
      }
    });
  }

  window.ConsoleCharts = { stacked: stacked, lines: lines, palette: PALETTE, short: short };
})();
