// Consultation pages: one-shot forms, uploads with a progress bar, the live board.
// No inline scripts (the portal's Content-Security-Policy forbids them): behaviour hangs on data- attributes.
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // A double-clicked submit sends one request: the first click disables the form's buttons.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute || !form.hasAttribute("data-once")) return;
    if (form.dataset.sent) { ev.preventDefault(); return; }
    form.dataset.sent = "1";
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }, 0);
  });

  // Uploads show their progress; a refused file shows the server's message.
  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var input = form.querySelector('input[type="file"]');
      if (!input.files.length) return;
      var bar = form.querySelector("progress");
      var status = form.querySelector(".upload-status");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false;
      bar.value = 0;
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          bar.value = 100;
          window.location.reload();
        } else {
          var message = xhr.statusText;
          try { message = JSON.parse(xhr.responseText).detail || message; } catch (e) { /* an HTML page */ }
          status.textContent = message;
          status.className = "upload-status error";
        }
      };
      xhr.onerror = function () { status.textContent = "network error"; status.className = "upload-status error"; };
      var data = new FormData(form);
      xhr.send(data);
    });
  });

  // Case pages and worklists: say so when a consultation shown here changes elsewhere.
  var live = document.querySelector("[data-live]");
  if (live && window.EventSource) {
    var watched = live.dataset.live; // a consultation id, or "*" for any on a list
    var events = new EventSource("/portal/events");
    events.addEventListener("change", function (e) {
      if (watched !== "*" && e.data !== watched) return;
      var note = document.querySelector("[data-live-notice]");
      if (note) note.hidden = false;
    });
  }

  // The live board: reload the rows fragment whenever the server says a consultation changed.
  var board = document.querySelector("[data-board]");
  if (board) {
    var pending = false;
    var live = document.querySelector("[data-live-status]");
    var refresh = function () {
      if (pending) return;
      pending = true;
      fetch(board.dataset.board, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { board.innerHTML = html; board.dataset.updated = String(Date.now()); })
        .catch(function () { /* the next event or tick tries again */ })
        .then(function () { pending = false; });
    };
    var source = new EventSource(board.dataset.events);
    source.addEventListener("change", refresh);
    source.onopen = function () { if (live) live.classList.remove("offline"); };
    source.onerror = function () { if (live) live.classList.add("offline"); };
    setInterval(refresh, 60000); // time left counts down even when nothing happens
    var clock = document.querySelector("[data-clock]");
    if (clock) {
      var tick = function () { clock.textContent = new Date().toLocaleTimeString(document.documentElement.lang, { timeZone: "Asia/Shanghai" }); };
      tick();
      setInterval(tick, 1000);
    }
  }
})();
