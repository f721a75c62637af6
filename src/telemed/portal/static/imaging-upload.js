// Imaging upload: a DICOM folder or ZIP file(s), each file sent in resumable 1 MB parts
// (telemed.portal.uploads) with one progress bar for all bytes, then checked and stored by the
// server (/portal/imaging/upload/{id}), which answers one result per file (a ZIP's members too).
// No inline scripts (the portal's CSP): messages come from the form's data- attributes.
(function () {
  "use strict";
  var form = document.getElementById("imaging-upload");
  if (!form) return;
  var bar = document.getElementById("upload-bar");
  var status = document.getElementById("upload-status");
  var tbody = document.querySelector("#upload-results tbody");
  var msg = form.dataset;

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (_, k) { return values[k] === undefined ? "" : String(values[k]); });
  }
  function detail(r) {
    return r.text().then(function (t) {
      try { return JSON.parse(t).detail || r.statusText; } catch (e) { return r.statusText; }
    });
  }
  function json(r) {
    if (!r.ok) return detail(r).then(function (m) { throw new Error(m); });
    return r.json();
  }
  function typeOf(file) {
    return /\.zip$/i.test(file.name) ? "application/zip" : "application/dicom";
  }

  // One file through the resumable upload protocol; onBytes(n) reports the bytes the server holds.
  function send(file, onBytes) {
    return fetch("/portal/uploads", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), Accept: "application/json" },
      body: JSON.stringify({ name: file.name, type: typeOf(file), size: file.size })
    }).then(json).then(function (up) {
      var failures = 0;
      function next(offset) {
        onBytes(offset);
        if (offset >= file.size) return Promise.resolve(up.id);
        return fetch("/portal/uploads/" + up.id, {
          method: "PATCH", credentials: "same-origin", body: file.slice(offset, offset + up.chunk),
          headers: { "X-CSRF-Token": csrf(), "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" }
        }).then(function (r) {
          if (r.ok || r.status === 409) { failures = 0; return r.json().then(function (j) { return next(j.offset); }); }
          return detail(r).then(function (m) { throw new Error(m); });
        }, function () {
          failures += 1;  // the connection dropped: ask the server how far it got, continue from there
          if (failures > 30) throw new Error("network error");
          return new Promise(function (ok) { setTimeout(ok, 1000 * Math.min(failures, 5)); }).then(function () {
            return fetch("/portal/uploads/" + up.id, { credentials: "same-origin", headers: { Accept: "application/json" } })
              .then(json).then(function (j) { return next(j.offset); });
          });
        });
      }
      return next(0);
    }).then(function (id) {
      return fetch("/portal/imaging/upload/" + id, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf(), Accept: "application/json" }
      }).then(json);
    });
  }

  function row(file, accepted, reason, view) {
    var tr = document.createElement("tr");
    tr.className = accepted ? "upload-accepted" : "upload-rejected";
    var name = document.createElement("td");
    name.textContent = file;
    var result = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "badge " + (accepted ? "badge-success" : "badge-danger");
    badge.textContent = accepted ? msg.msgAccepted : msg.msgRejected;
    result.appendChild(badge);
    var why = document.createElement("td");
    if (accepted && view) {
      var a = document.createElement("a");
      a.href = view;
      a.textContent = msg.msgOpen;
      why.appendChild(a);
    } else {
      why.textContent = reason || "";
    }
    tr.append(name, result, why);
    tbody.appendChild(tr);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var files = Array.prototype.slice.call(form.elements.folder.files).concat(
      Array.prototype.slice.call(form.elements.files.files));
    files = files.filter(function (f) { return f.size > 0 && !/(^|\/)(\.|DICOMDIR$)/i.test(f.webkitRelativePath || f.name); });
    if (!files.length) { status.textContent = msg.msgNone; form.nextElementSibling.hidden = false; return; }
    var total = files.reduce(function (n, f) { return n + f.size; }, 0);
    var done = 0, accepted = 0, rejected = 0;
    var button = form.querySelector("button");
    button.disabled = true;
    form.nextElementSibling.hidden = false;
    document.querySelector(".upload-results-card").hidden = false;
    tbody.textContent = "";
    bar.value = 0;
    var chain = Promise.resolve();
    files.forEach(function (file) {
      chain = chain.then(function () {
        var label = file.webkitRelativePath || file.name;
        status.textContent = fill(msg.msgSending, { name: label });
        return send(file, function (n) {
          bar.value = (done + n) / total;
          if (n >= file.size) status.textContent = msg.msgStoring;
        }).then(function (answer) {
          answer.results.forEach(function (r) {
            var shown = answer.results.length > 1 || r.file !== file.name ? label + (r.file !== file.name ? " › " + r.file : "") : label;
            row(shown, r.accepted, r.reason, r.view);
          });
          accepted += answer.accepted;
          rejected += answer.rejected;
        }, function (err) {
          row(label, false, err.message);
          rejected += 1;
        }).then(function () { done += file.size; bar.value = done / total; });
      });
    });
    chain.then(function () {
      bar.value = 1;
      status.textContent = fill(msg.msgDone, { accepted: accepted, rejected: rejected });
      form.dataset.finished = "1";
      button.disabled = false;
    });
  });
})();
