// Usage page: the two stacked charts from the JSON the server rendered into the page.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("usage-data").textContent);
  var C = window.ConsoleCharts;
  function series(kind) {
    return data.models.map(function (model, i) {
      return { name: model, values: data[kind][model], color: C.palette[i % C.palette.length] };
    });
  }
  function draw() {
    C.stacked(document.getElementById("chart-tokens"), data.days, series("tokens"));
    C.stacked(document.getElementById("chart-cost"), data.days, series("cost"), { prefix: "$" });
  }
  var legend = document.getElementById("legend");
  data.models.forEach(function (model, i) {
    var item = document.createElement("li");
    var swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = C.palette[i % C.palette.length];
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(model));
    legend.appendChild(item);
  });
  document.getElementById("key").addEventListener("change", function (event) { event.target.form.submit(); });
  draw();
  var pending;
  window.addEventListener("resize", function () { clearTimeout(pending); pending = setTimeout(draw, 150); });
})();
