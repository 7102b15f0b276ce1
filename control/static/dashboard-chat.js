// Dashboard quick chat: send with fetch, show the agent's reply as it streams in (EventSource).
(function () {
  "use strict";
  var form = document.getElementById("chat-form");
  if (!form) { return; }
  var log = document.getElementById("chat-log");
  var input = document.getElementById("chat-text");
  var button = document.getElementById("chat-send");
  var status = document.getElementById("chat-status");

  function bubble(kind, text) {
    var empty = document.getElementById("chat-empty");
    if (empty) { empty.remove(); }
    var node = document.createElement("p");
    node.className = "bubble " + kind;
    node.textContent = text;
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }

  function busy(on, text) {
    button.disabled = on;
    status.textContent = text || "";
  }

  function follow(url, node) {
    var source = new EventSource(url);
    source.addEventListener("delta", function (e) {
      node.textContent = JSON.parse(e.data).text;
      log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("final", function (e) {
      source.close();
      node.textContent = JSON.parse(e.data).text;
      node.classList.remove("pending");
      busy(false, "");
      input.focus();
    });
    source.addEventListener("error", function (e) {
      // A server "error" event carries data; a dropped connection does not, and the browser
      // reconnects by itself after the stream's retry delay.
      if (e.data) {
        source.close();
        node.classList.remove("pending");
        node.textContent = JSON.parse(e.data).message;
        busy(false, "");
      }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) { status.textContent = "Write a message first."; return; }
    busy(true, "Sending…");
    fetch(form.action, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRFToken": form.dataset.csrf},
      body: JSON.stringify({text: text}),
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    }).then(function (result) {
      if (!result.ok) { busy(false, result.body.message || "Could not send."); return; }
      bubble("user", text);
      input.value = "";
      var reply = bubble("agent pending", "…");
      busy(true, "Your agent is answering…");
      follow(result.body.stream_url, reply);
    }).catch(function () {
      busy(false, "Could not reach the server; check your connection and try again.");
    });
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  log.scrollTop = log.scrollHeight;
}());
