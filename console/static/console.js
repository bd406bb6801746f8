// dnsflow console: the selectors and the live tail (server-sent events from /api/tail).
// Everything else is rendered on the server.
(function () {
  "use strict";
  // the tenant and window selectors apply at once (no inline handlers: the CSP forbids them)
  document.querySelectorAll("header form.tenant select").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });
  // traffic, anomalies and alerts redraw every 30 s (not while evidence or a diff is open)
  var page = document.body.dataset.page;
  if (["traffic", "anomalies", "alerts"].indexOf(page) < 0) return;
  setInterval(function () {
    if (document.hidden || document.querySelector("main details[open]")) return;
    fetch(location.href, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) return null;
      return r.text();
    }).then(function (html) {
      if (!html) return;
      var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
      if (fresh) document.querySelector("main").replaceWith(fresh);
    }).catch(function () {});
  }, 30000);
})();

(function () {
  "use strict";
  var box = document.getElementById("tail");
  if (!box) return;
  var status = document.getElementById("tail-status");
  var form = document.getElementById("tail-filters");
  var pause = document.getElementById("tail-pause");
  var MAX = 500;
  var source = null;
  var shown = 0;
  var paused = false;

  function query() {
    var params = new URLSearchParams(new FormData(form));
    var keep = new URLSearchParams();
    params.forEach(function (v, k) { if (v) keep.set(k, v); });
    return keep.toString();
  }

  function add(msg) {
    var row = document.createElement("div");
    row.className = "ev d-" + (msg.event.decision || "");
    row.dataset.tenant = msg.event.tenant || "";
    row.textContent = msg.line;
    box.appendChild(row);
    while (box.childNodes.length > MAX) box.removeChild(box.firstChild);
    if (!paused) box.scrollTop = box.scrollHeight;
    shown += 1;
    status.textContent = "live: " + shown + " event(s) shown";
  }

  function connect() {
    if (source) source.close();
    var q = query();
    history.replaceState(null, "", q ? "?" + q : location.pathname);
    source = new EventSource("/api/tail" + (q ? "?" + q : ""));
    status.textContent = "connecting…";
    source.addEventListener("open", function () { status.textContent = "live: waiting for events"; });
    source.addEventListener("dns", function (e) { add(JSON.parse(e.data)); });
    source.addEventListener("problem", function (e) {
      status.textContent = JSON.parse(e.data).error;
      source.close();
    });
    source.onerror = function () { status.textContent = "disconnected; retrying…"; };
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); box.textContent = ""; shown = 0; connect(); });
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.textContent = paused ? "Follow" : "Pause scrolling";
  });
  connect();
})();
