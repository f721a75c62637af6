/* Telemed portal: small progressive helpers. Pages work without JavaScript; this adds comfort.
 *
 *   Telemed.postJSON(url, data)                       -> Promise<parsed JSON | null>
 *   Telemed.uploadWithProgress(url, file, onProgress, {field, fields}) -> Promise<XMLHttpRequest>
 *   Telemed.liveEvents(url, onEvent, {events})        -> {close()}
 *
 * Requests carry the page's CSRF token (<meta name="csrf-token">) in the X-CSRF-Token header.
 * No text lives here: messages come from the server (data- attributes, JSON "detail").
 */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function toLogin() {
    var here = window.location.pathname + window.location.search;
    window.location.assign("/portal/login?next=" + encodeURIComponent(here));
  }

  /** An error carrying the HTTP status and the problem-details body (its "detail" is localized). */
  function RequestError(status, body) {
    var message = body && (body.detail || body.title) ? body.detail || body.title : "HTTP " + status;
    var error = new Error(message);
    error.status = status;
    error.body = body;
    return error;
  }

  function parse(text) {
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      return { detail: text };
    }
  }

  /** POST ``data`` as JSON; resolves with the parsed JSON reply, rejects with a RequestError. */
  function postJSON(url, data, options) {
    var opts = options || {};
    return fetch(url, {
      method: opts.method || "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRF-Token": csrfToken(),
      },
      body: data === undefined ? undefined : JSON.stringify(data),
    }).then(function (response) {
      if (response.status === 401) {
        toLogin();
      }
      return response.text().then(function (text) {
        var body = parse(text);
        if (!response.ok) throw RequestError(response.status, body);
        return body;
      });
    });
  }

  /**
   * Upload one file as multipart/form-data (field "file" unless options.field), reporting
   * progress as onProgress(fraction 0..1, loaded bytes, total bytes). Resolves with the
   * XMLHttpRequest when the server answered 2xx, rejects with a RequestError otherwise.
   */
  function uploadWithProgress(url, file, onProgress, options) {
    var opts = options || {};
    return new Promise(function (resolve, reject) {
      var form = new FormData();
      var extra = opts.fields || {};
      Object.keys(extra).forEach(function (key) {
        form.append(key, extra[key]);
      });
      form.append("csrf_token", csrfToken());
      form.append(opts.field || "file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open(opts.method || "POST", url);
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (event) {
        if (onProgress && event.lengthComputable) onProgress(event.loaded / event.total, event.loaded, event.total);
      });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          if (onProgress) onProgress(1, file.size, file.size);
          resolve(xhr);
        } else {
          if (xhr.status === 401) toLogin();
          reject(RequestError(xhr.status, parse(xhr.responseText)));
        }
      });
      xhr.addEventListener("error", function () {
        reject(RequestError(0, null));
      });
      xhr.addEventListener("abort", function () {
        reject(RequestError(0, { detail: "aborted" }));
      });
      xhr.send(form);
    });
  }

  /**
   * Server-sent events with reconnection: onEvent(data, event) for each message (data is
   * parsed JSON when it is JSON). EventSource retries by itself after a network error, but gives
   * up when the server answers with an error status; then we retry with backoff (1 s .. 30 s).
   * options.events names extra event types to listen to besides "message".
   */
  function liveEvents(url, onEvent, options) {
    var opts = options || {};
    var source = null;
    var closed = false;
    var delay = 1000;
    var timer = null;

    function deliver(event) {
      delay = 1000;
      var data = event.data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        /* plain text */
      }
      onEvent(data, event);
    }

    function connect() {
      if (closed) return;
      source = new EventSource(url, { withCredentials: true });
      source.addEventListener("message", deliver);
      (opts.events || []).forEach(function (name) {
        source.addEventListener(name, deliver);
      });
      source.addEventListener("open", function () {
        delay = 1000;
        if (opts.onOpen) opts.onOpen();
      });
      source.addEventListener("error", function () {
        if (opts.onError) opts.onError();
        if (source.readyState === EventSource.CLOSED && !closed) {
          timer = window.setTimeout(connect, delay);
          delay = Math.min(delay * 2, 30000);
        }
      });
    }

    connect();
    return {
      close: function () {
        closed = true;
        if (timer) window.clearTimeout(timer);
        if (source) source.close();
      },
    };
  }

  /* --- progressive behaviour for server-rendered pages ------------------------------------- */

  function enhance(root) {
    // <form data-once>: no double submission (a second click while the first is on its way).
    root.querySelectorAll("form[data-once]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.dataset.submitted) {
          event.preventDefault();
          return;
        }
        form.dataset.submitted = "1";
        form.querySelectorAll("button[type=submit]").forEach(function (b) {
          b.setAttribute("aria-busy", "true");
        });
      });
    });
    // <form data-confirm="Question?">: ask before submitting.
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
    // <button data-copy="#selector" data-copied="Copied">: copy an element's text.
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.querySelector(button.dataset.copy);
        if (!target || !navigator.clipboard) return;
        var text = Array.prototype.map
          .call(target.querySelectorAll("li"), function (li) {
            return li.textContent.trim();
          })
          .join("\n") || target.textContent.trim();
        navigator.clipboard.writeText(text).then(function () {
          if (button.dataset.copied) button.textContent = button.dataset.copied;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
  });

  window.Telemed = {
    csrfToken: csrfToken,
    postJSON: postJSON,
    uploadWithProgress: uploadWithProgress,
    liveEvents: liveEvents,
    enhance: enhance,
  };
})();
