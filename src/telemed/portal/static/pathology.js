/* Whole-slide viewer: OpenSeadragon on the centre's Deep Zoom tiles, an overview (navigator), a
   scale bar in micrometres, how much of the file has arrived from the site, and annotations
   (point, line with its length, polygon with its area, text) saved on the server and shown to
   everyone on the case. No inline code (strict CSP): settings and messages come from data- attributes. */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var NICE = [1, 2, 5];
  var POLL_MS = 4000;

  function niceLength(um) {
    var p = Math.pow(10, Math.floor(Math.log10(um)));
    var best = p;
    for (var k = 0; k < 3; k++) { if (NICE[k] * p <= um) best = NICE[k] * p; }
    return best;
  }

  function umLabel(um) {
    if (um >= 1000) return +(um / 1000).toPrecision(3) + " mm";
    return +um.toPrecision(3) + " µm";
  }

  function areaLabel(um2) {
    if (um2 >= 1e6) return +(um2 / 1e6).toPrecision(3) + " mm²";
    return +um2.toPrecision(3) + " µm²";
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
      text.textContent = umLabel(um);
      box.dataset.umPerPx = umPerScreenPx.toPrecision(4);
    }
    viewer.addHandler("animation", update);
    viewer.addHandler("open", update);
    viewer.addHandler("resize", update);
  }

  function progress(el, pane) {
    var out = pane.querySelector("[data-progress]");
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

  function node(name, attrs, parent) {
    var n = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    parent.appendChild(n);
    return n;
  }

  function annotations(el, pane, viewer) {
    var layer = document.createElementNS(SVG, "svg");
    layer.setAttribute("class", "annotation-layer");
    el.appendChild(layer);
    var list = pane.querySelector("[data-annotation-list]");
    var hint = pane.querySelector("[data-hint]");
    var textInput = pane.querySelector(".annotation-text");
    var finish = pane.querySelector("[data-finish]");
    var buttons = pane.querySelectorAll("[data-mode]");
    var items = [];
    var mode = null;
    var draft = [];

    function screen(p) {
      var s = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(p[0], p[1]));
      return [s.x, s.y];
    }

    function describe(a) {
      var name = el.dataset["msg" + a.kind.charAt(0).toUpperCase() + a.kind.slice(1)];
      if (a.kind === "line" && a.length_um != null) return name + " " + umLabel(a.length_um);
      if (a.kind === "polygon" && a.area_um2 != null) return name + " " + areaLabel(a.area_um2);
      if (a.text) return name + " “" + a.text + "”";
      return name;
    }

    function shape(kind, points, cls, label) {
      var pts = points.map(screen);
      var flat = pts.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" ");
      if (kind === "polygon" && pts.length > 2) node("polygon", { points: flat, "class": "ann ann-area " + cls }, layer);
      else if (pts.length > 1) node("polyline", { points: flat, "class": "ann " + cls }, layer);
      pts.forEach(function (p) { node("circle", { cx: p[0], cy: p[1], r: kind === "point" ? 6 : 3.5, "class": "ann-dot" }, layer); });
      if (label) {
        var last = pts[pts.length - 1];
        node("text", { x: last[0] + 9, y: last[1] - 9, "class": "ann-label" }, layer).textContent = label;
      }
    }

    function draw() {
      while (layer.firstChild) layer.removeChild(layer.firstChild);
      items.forEach(function (a) {
        var label = a.kind === "point" ? "" : describe(a).replace(/^\S+ /, "");
        if (a.kind === "text") label = a.text;
        shape(a.kind, a.points, "", label);
      });
      if (draft.length) shape(mode === "polygon" ? "polygon" : "line", draft, "ann-draft", "");
    }

    function render() {
      list.textContent = "";
      items.forEach(function (a) {
        var li = document.createElement("li");
        li.textContent = describe(a);
        li.dataset.kind = a.kind;
        list.appendChild(li);
      });
      el.dataset.annotationCount = items.length;
      draw();
    }

    function load() {
      return fetch(el.dataset.annotations, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (data) {
          if (JSON.stringify(data) !== JSON.stringify(items)) { items = data; render(); }
        });
    }

    function setMode(next) {
      mode = next === mode ? null : next;
      draft = [];
      buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.mode === mode)); });
      finish.classList.toggle("is-invisible", mode !== "polygon");  // keeps its place: nothing moves under the cursor
      viewer.gestureSettingsMouse.dblClickToZoom = !mode;  // a quick second corner is not a zoom
      hint.textContent = mode ? el.dataset["msgHint" + mode.charAt(0).toUpperCase() + mode.slice(1)] : "";
      draw();
    }

    function save() {
      var body = { kind: mode, points: draft, text: textInput.value };
      draft = [];
      Telemed.postJSON(el.dataset.annotations, body).then(function () {
        hint.textContent = el.dataset.msgSaved;
        if (mode === "text") textInput.value = "";
        return load();
      }).catch(function (err) {
        hint.textContent = (err && err.body && err.body.detail) || el.dataset.msgFailed;
        draw();
      });
    }

    buttons.forEach(function (b) { b.addEventListener("click", function () { setMode(b.dataset.mode); }); });
    finish.addEventListener("click", function () { if (mode === "polygon" && draft.length > 2) save(); });

    viewer.addHandler("canvas-click", function (e) {
      if (!mode || !e.quick) return;
      e.preventDefaultAction = true;
      var p = viewer.viewport.viewerElementToImageCoordinates(e.position);
      draft.push([Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10]);
      if (mode === "point" || mode === "text" || (mode === "line" && draft.length === 2)) save();
      else draw();
    });
    viewer.addHandler("update-viewport", draw);
    load();
    setInterval(load, POLL_MS);
  }

  function start(el) {
    var pane = el.closest(".slide-pane");
    var box = pane.querySelector("[data-scalebar]");
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
      crossOriginPolicy: false,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true }
    });
    el.telemedViewer = viewer;
    scaleBar(viewer, parseFloat(el.dataset.mpp), box, el.dataset.msgNoScale);
    progress(el, pane);
    viewer.addHandler("open", function () { el.dataset.ready = "1"; annotations(el, pane, viewer); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panes = document.querySelectorAll(".slide-viewer[data-dzi]");
    for (var i = 0; i < panes.length; i++) start(panes[i]);
  });
})();
