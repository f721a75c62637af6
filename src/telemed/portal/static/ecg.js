/* Remote ECG pool page: live list (Server-Sent Events), a sound for urgent ECGs, upload with progress. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function reloadRows(lists) {
    return fetch(lists.dataset.rows, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        lists.innerHTML = html;
        if (window.Telemed && window.Telemed.enhance) window.Telemed.enhance(lists);
      });
  }

  function live(lists) {
    var status = document.querySelector("[data-live-status]");
    var alertSound = document.getElementById("ecg-alert");
    window.Telemed.liveEvents(lists.dataset.events, function (data) {
      if (!data || !data.ecg) return;
      reloadRows(lists).then(function () {
        document.body.dataset.lastEcg = data.ecg;
        document.body.dataset.lastEvent = data.event;
        var row = lists.querySelector('[data-ecg="' + data.ecg + '"]');
        if (row) row.classList.add("ecg-new");
      });
      if (data.priority === "urgent" && (data.event === "new" || data.event === "escalated" || data.event === "passed")) {
        document.body.dataset.lastAlert = data.ecg;
        if (alertSound) alertSound.play().catch(function () { /* autoplay blocked until the user interacts */ });
      }
    }, {
      events: ["ecg"],
      onOpen: function () {
        document.body.dataset.ecgLive = "1";
        if (status) status.classList.add("on");
      },
      onError: function () { if (status) status.classList.remove("on"); },
    });
  }

  function upload(form) {
    var bar = form.querySelector("[data-progress]");
    var error = form.querySelector("[data-upload-error]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false;
      error.hidden = true;
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status === 201 && body && body.url) {
          window.location.assign(body.url);
          return;
        }
        delete form.dataset.submitted;
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.removeAttribute("aria-busy"); });
        error.textContent = (body && body.detail) || xhr.statusText || String(xhr.status);
        error.hidden = false;
      });
      xhr.send(new FormData(form));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var lists = document.getElementById("ecg-lists");
    if (lists && lists.dataset.events && window.Telemed) live(lists);
    var form = document.querySelector("form[data-ecg-upload]");
    if (form) upload(form);
  });
})();
