// The checkout success page: follow provisioning live by polling /billing/status.json every
// second (queued -> server -> agent ready), then reload so the server renders the chat links.
// A static file because the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var list = document.getElementById("steps");
  var note = document.getElementById("step-note");
  if (!list || !note) { return; }
  var order = ["queued", "server", "agent", "ready"];
  var FINAL = { ready: true, failed: true, stopped: true };

  function show(step) {
    var at = order.indexOf(step);
    list.querySelectorAll("li").forEach(function (li, i) {
      li.className = (step === "ready" || i < at) ? "done" : (i === at ? "current" : "todo");
      if (i === at) { li.setAttribute("aria-current", "step"); } else { li.removeAttribute("aria-current"); }
    });
    note.textContent = note.getAttribute("data-" + step) || "";
  }

  function poll() {
    fetch(list.getAttribute("data-status-url"), {
      headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store"
    }).then(function (response) {
      if (!response.ok) { throw new Error("status " + response.status); }
      return response.json();
    }).then(function (status) {
      if (status.step !== list.getAttribute("data-step")) {
        list.setAttribute("data-step", status.step);
        show(status.step);
      }
      if (status.step === "ready" && !document.getElementById("link-title")) {
        window.location.reload();
      } else if (!FINAL[status.step]) {
        window.setTimeout(poll, 1000);
      }
    }).catch(function () {
      window.setTimeout(poll, 1000);  // a dropped connection: keep following
    });
  }

  var first = list.getAttribute("data-step");
  show(first);
  if (!FINAL[first]) { window.setTimeout(poll, 1000); }
})();
