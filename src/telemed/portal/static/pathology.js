/* Whole-slide viewer: OpenSeadragon on the centre's Deep Zoom tiles, an overview (navigator), a
   scale bar in micrometres, and how much of the file has arrived from the site. No inline code
   (strict CSP): settings come from data- attributes. */
(function () {
  "use strict";

  var NICE = [1, 2, 5];

  function niceLength(um) {
    var p = Math.pow(10, Math.floor(Math.log10(um)));
    var best = p;
    for (var k = 0; k < 3; k++) { if (NICE[k] * p <= um) best = NICE[k] * p; }
    return best;
  }

  function label(um) {
    if (um >= 1000) return (um / 1000) + " mm";
    return um + " µm";
  }

  function scaleBar(viewer, mpp, box, noScale) {
    var bar = box.querySelector(".scalebar-bar");
    var text = box.querySelector(".scalebar-label");
    if (!mpp) { text.textContent = noScale; bar.classList.add("is-hidden"); return; }
    function update() {
      var zoom = viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
      var umPerScreenPx = mpp / zoom;
      var um = niceLength(umPerScreenPx * 150);  // at most 150 screen pixels
      bar.style.width = Math.round(um / umPerScreenPx) + "px";
      text.textContent = label(um);
      box.dataset.umPerPx = umPerScreenPx.toPrecision(4);
    }
    viewer.addHandler("animation", update);
    viewer.addHandler("open", update);
    viewer.addHandler("resize", update);
  }

  function progress(el, box) {
    var out = el.parentElement.querySelector("[data-progress]");
    function poll() {
      fetch(el.dataset.status, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (s) {
        if (s.complete) { out.textContent = el.dataset.msgStored; return; }
        var pct = Math.floor(100 * s.offset / s.size);
        out.textContent = el.dataset.msgArriving.replace("{pct}", pct) + (s.online ? "" : " · " + el.dataset.msgOffline);
        setTimeout(poll, 3000);
      }).catch(function () { setTimeout(poll, 10000); });
    }
    poll();
  }

  function start(el) {
    var box = el.parentElement.querySelector("[data-scalebar]");
    var viewer = OpenSeadragon({
      element: el,
      prefixUrl: el.dataset.images,
      tileSources: el.dataset.dzi,
      showNavigator: true,
      autoHideControls: false,
      navigatorPosition: "TOP_RIGHT",
      showRotationControl: true,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      timeout: 60000,
      loadTilesWithAjax: true,
      ajaxWithCredentials: true,
      crossOriginPolicy: false,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true }
    });
    el.telemedViewer = viewer;
    scaleBar(viewer, parseFloat(el.dataset.mpp), box, el.dataset.msgNoScale);
    progress(el, box);
    viewer.addHandler("open", function () { el.dataset.ready = "1"; });
    viewer.world.addHandler("add-item", function () { el.dataset.opened = "1"; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panes = document.querySelectorAll(".slide-viewer[data-dzi]");
    for (var i = 0; i < panes.length; i++) start(panes[i]);
  });
})();
