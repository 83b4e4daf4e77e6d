// Light or dark: the system's choice unless the toggle stored one. Loaded in <head>, so no flash.
(function () {
  "use strict";
  var stored = null;
  try { stored = localStorage.getItem("console.theme"); } catch (e) { /* private mode */ }
  if (stored === "light" || stored === "dark") document.documentElement.dataset.theme = stored;
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.addEventListener("click", function () {
      var dark = document.documentElement.dataset.theme
        ? document.documentElement.dataset.theme === "dark"
        : window.matchMedia("(prefers-color-scheme: dark)").matches;
      var next = dark ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      try { localStorage.setItem("console.theme", next); } catch (e) { /* private mode */ }
      document.dispatchEvent(new CustomEvent("console-theme"));
    });
  });
})();
