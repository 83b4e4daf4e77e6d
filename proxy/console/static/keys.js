// Keys page: copy the new secret, confirm a revoke, offer the new key to the playground.
(function () {
  "use strict";
  var copy = document.getElementById("copy-secret");
  if (copy) {
    var field = document.getElementById(copy.dataset.copy);
    copy.addEventListener("click", function () {
      field.select();
      var done = function () { copy.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
    // The secret was shown in this page anyway: the playground may offer it (this tab only).
    try { sessionStorage.setItem("console.newKey", field.value); } catch (e) { /* private mode */ }
  }
  document.querySelectorAll("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
