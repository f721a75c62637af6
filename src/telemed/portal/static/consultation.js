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

  // Uploads go in 1 MB parts that resume after a dropped connection (telemed.portal.uploads),
  // with a progress bar; a refused file shows the server's message.
  function sendPart(id, offset, blob) {
    return fetch("/portal/uploads/" + id, {
      method: "PATCH", credentials: "same-origin", body: blob,
      headers: { "X-CSRF-Token": csrf(), "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" }
    });
  }
  function serverOffset(id) {
    return fetch("/portal/uploads/" + id, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); }).then(function (j) { return j.offset; });
  }
  function detail(r) {
    return r.text().then(function (t) {
      try { return JSON.parse(t).detail || r.statusText; } catch (e) { return r.statusText; }
    });
  }
  function resumableUpload(file, onProgress) {
    var type = file.type || (/\.dcm$/i.test(file.name) ? "application/dicom" : "application/octet-stream");
    return fetch("/portal/uploads", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), Accept: "application/json" },
      body: JSON.stringify({ name: file.name, type: type, size: file.size })
    }).then(function (r) {
      if (!r.ok) return detail(r).then(function (m) { throw new Error(m); });
      return r.json();
    }).then(function (up) {
      var failures = 0;
      function next(offset) {
        onProgress(offset / file.size);
        if (offset >= file.size) return Promise.resolve(up.id);
        return sendPart(up.id, offset, file.slice(offset, offset + up.chunk)).then(function (r) {
          if (r.ok) { failures = 0; return r.json().then(function (j) { return next(j.offset); }); }
          if (r.status === 409) return r.json().then(function (j) { return next(j.offset); });
          return detail(r).then(function (m) { throw new Error(m); });
        }, function () {
          // The connection dropped: wait, ask the server how far it got, and continue from there.
          failures += 1;
          if (failures > 30) throw new Error("network error");
          return new Promise(function (ok) { setTimeout(ok, Math.min(1000 * failures, 10000)); })
            .then(function () { return serverOffset(up.id); }).then(next);
        });
      }
      return next(0);
    });
  }

  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var input = form.querySelector('input[type="file"]');
      if (!input.files.length) return;
      var bar = form.querySelector("progress");
      var status = form.querySelector(".upload-status");
      bar.hidden = false;
      bar.value = 0;
      status.textContent = "";
      resumableUpload(input.files[0], function (fraction) { bar.value = Math.round(100 * fraction); })
        .then(function (id) {
          var data = new FormData();
          data.append("csrf_token", csrf());
          data.append("upload_id", id);
          return fetch(form.action, { method: "POST", body: data, credentials: "same-origin",
                                      headers: { Accept: "application/json", "X-CSRF-Token": csrf() } });
        })
        .then(function (r) {
          if (!r.ok) return detail(r).then(function (m) { throw new Error(m); });
          window.location.reload();
        })
        .catch(function (err) { status.textContent = err.message; status.className = "upload-status error"; });
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
