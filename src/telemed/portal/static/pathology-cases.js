/* Pathology worklist and case page: the time left before each deadline, counted down every
   second, and the worklist reloaded every [data-refresh] seconds so a new frozen section shows
   up without a click. No inline code (strict CSP): messages come from data- attributes. */
(function () {
  "use strict";

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = Math.round((Date.parse(el.getAttribute("data-deadline")) - now) / 60000);
      var late = left < 0;
      var msg = el.getAttribute(late ? "data-msg-late" : "data-msg-left") || "";
      el.textContent = msg.replace("{m}", String(Math.abs(left)));
      el.classList.toggle("is-late", late);
      el.classList.toggle("is-soon", !late && left <= 10);
    });
  }

  function start() {
    tick();
    setInterval(tick, 1000);
    var box = document.querySelector("[data-refresh]");
    if (box) {
      var seconds = parseInt(box.getAttribute("data-refresh"), 10) || 20;
      setInterval(function () {
        if (!document.hidden) window.location.reload();
      }, seconds * 1000);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
