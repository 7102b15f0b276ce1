// Dashboard Connections page: connect (OAuth: follow the consent page; API key: send the typed
// fields) and disconnect through the JSON API, with the session's CSRF token.
(function () {
  "use strict";
  var root = document.getElementById("connections");
  if (!root) { return; }
  var status = document.getElementById("connections-status");

  function call(method, url, body) {
    status.textContent = "Working…";
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": root.dataset.csrf},
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(data.message || "Something went wrong."); }
        return data;
      });
    }).catch(function (error) {
      status.textContent = error.message;
      throw error;
    });
  }

  root.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    event.preventDefault();
    var method = button.dataset.action === "disconnect" ? "DELETE" : "POST";
    button.disabled = true;
    call(method, button.dataset.url, method === "POST" ? {} : undefined).then(function (data) {
      if (data.redirect_url) { window.location.assign(data.redirect_url); } else { window.location.reload(); }
    }, function () { button.disabled = false; });
  });

  root.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-action]");
    if (!form) { return; }
    event.preventDefault();
    var fields = {};
    Array.prototype.forEach.call(form.elements, function (el) { if (el.name) { fields[el.name] = el.value; } });
    call("POST", form.dataset.url, fields).then(function () { window.location.reload(); }, function () {});
  });
})();
