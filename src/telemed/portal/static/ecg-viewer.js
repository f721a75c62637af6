/* 12-lead ECG viewer: SVG drawn in millimetres, so the paper grid is true to scale.
 *
 * The SVG's width and height are given in CSS millimetres and its viewBox in mm: 1 mm of the
 * tracing is 1 CSS mm (96/25.4 CSS px), whatever the zoom of the page. 25 mm/s and 10 mm/mV by
 * default; 50 mm/s and 5/20 mm/mV selectable. Layouts: 3x4 + rhythm strip (II), 6x2, one lead.
 * Calipers: click two points; the readout gives the interval (ms) and the rate it implies.
 *
 * A long recording (a Holter strip: the server sends it in windows) is drawn as scrolling rhythm
 * strips of three leads: the page scrolls over the whole recording at paper scale, and only the
 * seconds in view are drawn, from 10 s chunks fetched as they come into view (and the next ones).
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var LEFT = 12; // mm before the first column: room for the 1 mV calibration pulse
  var ORDER_3X4 = [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]];
  var ORDER_6X2 = [["I", "V1"], ["II", "V2"], ["III", "V3"], ["aVR", "V4"], ["aVL", "V5"], ["aVF", "V6"]];

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }

  // The paper: 1 mm squares inside 5 mm squares, as patterns filling a rect of width × height mm.
  function paper(svg, width, height) {
    var defs = el("defs", {}, svg);
    var small = el("pattern", { id: "ecg-small", width: 1, height: 1, patternUnits: "userSpaceOnUse" }, defs);
    el("path", { d: "M1 0L0 0 0 1", class: "ecg-grid-small" }, small);
    var big = el("pattern", { id: "ecg-big", width: 5, height: 5, patternUnits: "userSpaceOnUse" }, defs);
    el("rect", { width: 5, height: 5, fill: "url(#ecg-small)" }, big);
    el("path", { d: "M5 0L0 0 0 5", class: "ecg-grid-big" }, big);
    return el("rect", { x: 0, y: 0, width: width, height: height, fill: "url(#ecg-big)", class: "ecg-paper" }, svg);
  }

  function Viewer(host, data) {
    this.host = host;
    this.data = data;
    this.speed = 25;
    this.gain = 10;
    this.layout = "3x4";
    this.lead = "II";
    this.calipers = [];
  }

  var CHUNK = 10; // seconds per window asked of the server for a long recording

  Viewer.prototype.isLong = function () {
    return !!this.data.duration && this.data.duration > this.seconds() + 0.5;
  };

  Viewer.prototype.stripLeads = function () {
    var have = Object.keys(this.data.leads);
    var wanted = [this.lead, "II", "V1", "V5", "I"].concat(have);
    return wanted.filter(function (n, i) { return have.indexOf(n) >= 0 && wanted.indexOf(n) === i; }).slice(0, 3);
  };

  Viewer.prototype.chunk = function (i) {
    var self = this;
    if (!this.chunks) this.chunks = new Map([[0, this.data]]);
    if (this.chunks.has(i)) return this.chunks.get(i);
    this.chunks.set(i, null); // asked for
    var url = this.host.dataset.waveform + "?start=" + i * CHUNK + "&seconds=" + CHUNK;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) { self.chunks.set(i, data); self.scheduleDraw(); })
      .catch(function () { self.chunks.delete(i); });
    return null;
  };

  Viewer.prototype.renderLong = function () {
    var self = this, rowH = 3 * this.gain, names = this.stripLeads();
    var height = names.length * rowH + 4;
    this.host.innerHTML = "";
    var scroller = document.createElement("div");
    scroller.className = "ecg-long";
    scroller.style.overflowX = "auto";
    var spacer = document.createElement("div");
    spacer.style.width = (LEFT + this.data.duration * this.speed) + "mm";
    spacer.style.height = height + "mm";
    scroller.appendChild(spacer);
    this.host.appendChild(scroller);
    var viewMm = Math.max(100, scroller.clientWidth * 25.4 / 96);
    var svg = el("svg", {
      width: viewMm + "mm", height: height + "mm", viewBox: "0 0 " + viewMm + " " + height,
      class: "ecg-svg", "data-speed": this.speed, "data-gain": this.gain, "data-width-mm": viewMm, role: "img",
    }, spacer);
    svg.style.position = "sticky";
    svg.style.left = "0";
    this.paper = paper(svg, viewMm, height);
    this.traces = el("g", {}, svg);
    this.clock = el("text", { x: viewMm - 2, y: 4, class: "ecg-label", "text-anchor": "end" }, svg);
    this.svg = svg;
    this.scroller = scroller;
    this.viewMm = viewMm;
    this.longLeads = names;
    this.calLayer = el("g", { class: "ecg-calipers" }, svg);
    svg.addEventListener("click", function (event) { self.click(event); });
    scroller.addEventListener("scroll", function () {
      if (self.calipers.length) { self.calipers = []; self.drawCalipers(); } // they marked the paper in view
      self.scheduleDraw();
    }, { passive: true });
    this.drawLong();
  };

  Viewer.prototype.scheduleDraw = function () {
    var self = this;
    if (this.pending || !this.scroller) return;
    this.pending = true;
    requestAnimationFrame(function () { self.pending = false; self.drawLong(); });
  };

  // The seconds in view: the grid scrolls with the paper, the traces are drawn from the chunks.
  Viewer.prototype.drawLong = function () {
    var t0 = Date.now();
    var mmPerPx = 25.4 / 96, speed = this.speed, rate = this.data.rate, rowH = 3 * this.gain, gain = this.gain;
    var offsetMm = this.scroller.scrollLeft * mmPerPx;
    var from = Math.max(0, (offsetMm - LEFT) / speed), span = this.viewMm / speed;
    var to = Math.min(this.data.duration, from + span);
    this.paper.setAttribute("x", -(offsetMm % 5));
    this.paper.setAttribute("width", this.viewMm + 5);
    var first = Math.floor(from / CHUNK), last = Math.floor(to / CHUNK);
    var i, self = this, missing = false;
    for (i = first; i <= last + 1; i++) if (i * CHUNK < this.data.duration && !this.chunk(i) && i <= last) missing = true;
    this.traces.innerHTML = "";
    this.longLeads.forEach(function (name, row) {
      var y0 = row * rowH + rowH * 0.6 + 2, pts = [];
      for (var c = first; c <= last; c++) {
        var data = self.chunks.get(c);
        if (!data || !data.leads[name]) continue;
        var values = data.leads[name], base = Math.round(data.start * rate);
        var a = Math.max(0, Math.floor(from * rate) - base), b = Math.min(values.length, Math.ceil(to * rate) - base + 1);
        for (var k = a; k < b; k++) {
          pts.push((LEFT + ((base + k) / rate) * speed - offsetMm).toFixed(2) + "," + (y0 - values[k] * gain).toFixed(2));
        }
      }
      if (pts.length) el("polyline", { points: pts.join(" "), class: "ecg-trace", "data-lead": name }, self.traces);
      var label = el("text", { x: 1, y: y0 - 0.6 * gain - 2, class: "ecg-label" }, self.traces);
      label.textContent = name;
    });
    var secs = Math.floor(from), mm = Math.floor(secs / 60), ss = secs % 60;
    this.clock.textContent = mm + ":" + (ss < 10 ? "0" : "") + ss + " / " + Math.round(this.data.duration / 60) + " min";
    this.host.dataset.t0 = from.toFixed(2);
    this.host.dataset.complete = missing ? "0" : "1";
    this.lastDrawMs = Date.now() - t0;
  };

  Viewer.prototype.seconds = function () {
    var any = this.data.leads[Object.keys(this.data.leads)[0]];
    return any.length / this.data.rate;
  };

  Viewer.prototype.rows = function () {
    var secs = this.seconds();
    if (this.layout === "1") return { cells: [[this.lead]], span: secs, strip: null };
    if (this.layout === "6x2") return { cells: ORDER_6X2, span: Math.min(secs, 10) / 2, strip: null };
    return { cells: ORDER_3X4, span: Math.min(secs, 10) / 4, strip: "II" };
  };

  Viewer.prototype.trace = function (g, name, t0, span, x0, y0) {
    var values = this.data.leads[name];
    if (!values) return;
    var rate = this.data.rate, speed = this.speed, gain = this.gain;
    var start = Math.round(t0 * rate), end = Math.min(values.length, Math.round((t0 + span) * rate));
    var pts = [];
    for (var i = start; i < end; i++) {
      pts.push((x0 + ((i - start) / rate) * speed).toFixed(3) + "," + (y0 - values[i] * gain).toFixed(3));
    }
    el("polyline", { points: pts.join(" "), class: "ecg-trace", "data-lead": name }, g);
    var label = el("text", { x: x0 + 1, y: y0 - 0.6 * gain - 2, class: "ecg-label" }, g);
    label.textContent = name;
  };

  Viewer.prototype.render = function () {
    if (this.isLong()) return this.renderLong();
    this.scroller = null;
    var layout = this.rows();
    var rowH = 3 * this.gain; // 3 mV per row
    var nRows = layout.cells.length + (layout.strip ? 1 : 0);
    var cols = layout.cells[0].length;
    var width = LEFT + cols * layout.span * this.speed + 2;
    var height = nRows * rowH + 4;
    this.width = width;
    this.host.innerHTML = "";
    var svg = el("svg", {
      width: width + "mm", height: height + "mm", viewBox: "0 0 " + width + " " + height,
      class: "ecg-svg", "data-speed": this.speed, "data-gain": this.gain, "data-width-mm": width,
      role: "img",
    }, this.host);
    paper(svg, width, height);
    var g = el("g", {}, svg);
    var self = this;
    var r, c;
    for (r = 0; r < nRows; r++) {
      var y0 = r * rowH + rowH * 0.6 + 2;
      // 1 mV calibration pulse, 0.2 s wide at the chosen speed.
      var w = 0.2 * this.speed;
      el("path", { d: "M1 " + y0 + "h2v" + -this.gain + "h" + w + "v" + this.gain + "h2", class: "ecg-cal",
                   "data-cal-height": this.gain }, g);
      if (r < layout.cells.length) {
        for (c = 0; c < cols; c++) {
          this.trace(g, layout.cells[r][c], c * layout.span, layout.span, LEFT + c * layout.span * this.speed, y0);
          if (c > 0) el("path", { d: "M" + (LEFT + c * layout.span * this.speed) + " " + (y0 - 4) + "v8", class: "ecg-sep" }, g);
        }
      } else {
        var span = layout.span * cols;
        this.trace(g, layout.strip, 0, span, LEFT, y0);
        (this.data.beats || []).forEach(function (b) {
          var t = b / self.data.rate;
          if (t <= span) el("path", { d: "M" + (LEFT + t * self.speed) + " " + (y0 + rowH * 0.3) + "l-0.8 1.6h1.6z", class: "ecg-beat" }, g);
        });
      }
    }
    this.svg = svg;
    this.calLayer = el("g", { class: "ecg-calipers" }, svg);
    svg.addEventListener("click", function (event) { self.click(event); });
    this.drawCalipers();
  };

  Viewer.prototype.toMm = function (event) {
    var p = this.svg.createSVGPoint();
    p.x = event.clientX;
    p.y = event.clientY;
    return p.matrixTransform(this.svg.getScreenCTM().inverse());
  };

  Viewer.prototype.click = function (event) {
    var p = this.toMm(event);
    if (this.calipers.length >= 2) this.calipers = [];
    this.calipers.push(p.x);
    this.drawCalipers();
  };

  Viewer.prototype.drawCalipers = function () {
    var layer = this.calLayer, h = this.svg.viewBox.baseVal.height, self = this;
    layer.innerHTML = "";
    this.calipers.forEach(function (x) { el("path", { d: "M" + x + " 0v" + h, class: "ecg-caliper" }, layer); });
    var out = document.querySelector("[data-caliper-readout]");
    if (!out) return;
    if (this.calipers.length === 2) {
      var ms = (Math.abs(this.calipers[1] - this.calipers[0]) / this.speed) * 1000;
      out.textContent = Math.round(ms) + " " + (self.host.dataset.ms || "ms") + " · " +
        Math.round(60000 / ms) + " " + (self.host.dataset.bpm || "/min");
      out.dataset.ms = String(Math.round(ms));
    } else {
      out.textContent = "";
      delete out.dataset.ms;
    }
  };

  function bind(viewer) {
    function on(selector, fn) {
      var control = document.querySelector(selector);
      if (control) control.addEventListener("change", function () { fn(control.value); viewer.calipers = []; viewer.render(); });
    }
    on("[data-speed]", function (v) { viewer.speed = Number(v); });
    on("[data-gain]", function (v) { viewer.gain = Number(v); });
    on("[data-layout]", function (v) { viewer.layout = v; });
    on("[data-lead]", function (v) { viewer.lead = v; });
    var clear = document.querySelector("[data-caliper-clear]");
    if (clear) clear.addEventListener("click", function () { viewer.calipers = []; viewer.drawCalipers(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var host = document.getElementById("ecg-viewer");
    if (!host) return;
    fetch(host.dataset.waveform, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var viewer = new Viewer(host, data);
        viewer.render();
        bind(viewer);
        window.TelemedEcgViewer = viewer;
        host.dataset.ready = "1";
      });
  });
})();
