/* The consultation's video call: plain WebRTC, signalling over the platform's WebSocket.
 *
 * Peers use "perfect negotiation" (either side may renegotiate; the polite one yields on a
 * collision). The page keeps its peer id across sockets: when the socket drops it fetches a
 * fresh join token, rejoins and restarts ICE on every call, without reloading. No text lives
 * here: messages come from data-msg-* attributes of #video-call (the server's translations).
 * In an SFU room (an MDT on Janus) the page publishes once and receives one connection per other
 * participant's feed; it never talks to Janus itself: sfu-publish / sfu-subscribe / sfu-start go
 * over the same socket and the server makes the requests in this consultation's Janus room.
 * Recording needs everyone's consent: the server asks every page, and only when all agreed does
 * the requester's page record (the tiles drawn on a canvas, every voice mixed) and upload it in
 * resumable parts; every page shows that recording is on.
 * window.telemedCall exposes the state for the browser tests.
 */
(function () {
  "use strict";
  var root = document.getElementById("video-call");
  if (!root) return;

  function msg(name) {
    var key = "msg" + name.split("-").map(function (w) { return w.charAt(0).toUpperCase() + w.slice(1); }).join("");
    return root.dataset[key] || name;
  }
  function $(id) { return document.getElementById(id); }
  function randomId() {
    var a = new Uint8Array(12);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  var state = {
    me: randomId(), ws: null, pcs: new Map(), names: new Map(), iceServers: [], localStream: null, screenTrack: null,
    policy: "all", muted: false, cameraOff: false, audioOnly: false, autoAudioOnly: false, leaving: false,
    socketOpens: 0, restarts: 0, backoff: 1000, poorSamples: 0, mediaError: null, lastRefusal: null,
    mode: "mesh", sfuPub: null, feeds: new Map(),
    recording: null, recorder: null, savedRecordings: [], recordError: null,
  };
  window.telemedCall = {
    state: state,
    dropSocket: function () { if (state.ws) state.ws.close(); },
    peers: function () { return Array.from(state.pcs.keys()); },
    restartSfu: function () { return restartSfu(); },
  };

  function setStatus(text) { $("call-status").textContent = text; }
  function showError(text) { var e = $("media-error"); e.textContent = text; e.hidden = false; }
  function showNotice(text) { var e = $("media-notice"); e.textContent = text; e.hidden = !text; }
  function send(obj) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
  }

  // -- local media -----------------------------------------------------------------------------
  function constraints() {
    var mic = $("mic-select").value, cam = $("cam-select").value;
    return {
      audio: mic ? { deviceId: { exact: mic } } : true,
      video: state.audioOnly ? false : (cam ? { deviceId: { exact: cam }, width: { ideal: 640 } } : { width: { ideal: 640 } }),
    };
  }

  async function openMedia() {
    try {
      state.localStream = await navigator.mediaDevices.getUserMedia(constraints());
    } catch (err) {
      state.mediaError = err.name;
      if (err.name === "NotAllowedError" || err.name === "SecurityError") showError(msg("camera-denied"));
      else showError(msg("no-devices"));
      state.localStream = new MediaStream(); // receive-only: the others can still be seen and heard
    }
    $("local-video").srcObject = state.localStream;
    await listDevices();
  }

  async function listDevices() {
    var devices = [];
    try { devices = await navigator.mediaDevices.enumerateDevices(); } catch (e) { return; }
    [["audioinput", "mic-select"], ["videoinput", "cam-select"]].forEach(function (pair) {
      var select = $(pair[1]), current = currentDevice(pair[0] === "audioinput" ? "audio" : "video");
      select.textContent = "";
      devices.filter(function (d) { return d.kind === pair[0]; }).forEach(function (d, i) {
        var o = document.createElement("option");
        o.value = d.deviceId;
        o.textContent = d.label || (pair[0] + " " + (i + 1));
        if (d.deviceId === current) o.selected = true;
        select.appendChild(o);
      });
    });
  }

  function currentDevice(kind) {
    var t = state.localStream && state.localStream.getTracks().find(function (x) { return x.kind === kind; });
    return t && t.getSettings ? t.getSettings().deviceId : null;
  }

  function track(kind) {
    return state.localStream ? state.localStream.getTracks().find(function (t) { return t.kind === kind; }) : null;
  }

  // The connections that carry our media: one per peer in a mesh, the publisher in an SFU room.
  function sendingPcs() {
    if (state.mode === "sfu") return state.sfuPub ? [state.sfuPub] : [];
    return Array.from(state.pcs.values()).map(function (p) { return p.pc; });
  }

  async function replaceLocal(kind, newTrack) {
    var old = track(kind);
    if (old) { state.localStream.removeTrack(old); old.stop(); }
    if (newTrack) state.localStream.addTrack(newTrack);
    if (state.mode === "sfu" && !state.sfuPub && newTrack) { // was watching only: start publishing
      await publish();
      $("local-video").srcObject = state.localStream;
      return;
    }
    sendingPcs().forEach(function (pc) {
      var sender = pc.getSenders().find(function (s) { return s.track ? s.track.kind === kind : s._kind === kind; });
      if (sender) sender.replaceTrack(kind === "video" && state.screenTrack ? state.screenTrack : newTrack);
      else if (newTrack) { var s = pc.addTrack(newTrack, state.localStream); s._kind = kind; }
    });
    $("local-video").srcObject = state.localStream;
  }

  async function switchDevice(kind) {
    var c = constraints();
    if (kind === "video" && (state.audioOnly || state.cameraOff)) return;
    try {
      var s = await navigator.mediaDevices.getUserMedia(kind === "audio" ? { audio: c.audio } : { video: c.video });
      var t = s.getTracks()[0];
      if (kind === "audio") t.enabled = !state.muted;
      await replaceLocal(kind, t);
    } catch (err) { showError(msg("no-devices")); }
  }

  function announce() {
    send({ type: "state", audio: !state.muted, video: !(state.cameraOff || state.audioOnly), screen: !!state.screenTrack });
  }

  // -- peers -----------------------------------------------------------------------------------
  function tileFor(peer, name) {
    var fig = document.getElementById("tile-" + peer);
    if (!fig) {
      fig = document.createElement("figure");
      fig.className = "tile";
      fig.id = "tile-" + peer;
      var v = document.createElement("video");
      v.autoplay = true; v.playsInline = true;
      var cap = document.createElement("figcaption");
      var note = document.createElement("span");
      note.className = "tile-note";
      fig.appendChild(v); fig.appendChild(cap); fig.appendChild(note);
      $("video-grid").appendChild(fig);
    }
    if (name) fig.querySelector("figcaption").textContent = name;
    return fig;
  }

  function peerConnection(peer, name) {
    var existing = state.pcs.get(peer);
    if (existing) return existing;
    var pc = new RTCPeerConnection({ iceServers: state.iceServers, iceTransportPolicy: state.policy });
    var p = { pc: pc, name: name, polite: state.me < peer, makingOffer: false, ignoreOffer: false, stream: new MediaStream() };
    state.pcs.set(peer, p);
    var fig = tileFor(peer, name);
    fig.querySelector("video").srcObject = p.stream;
    state.localStream.getTracks().forEach(function (t) {
      var s = pc.addTrack(t, state.localStream); s._kind = t.kind;
      if (t.kind === "video" && state.screenTrack) s.replaceTrack(state.screenTrack);
    });
    ["audio", "video"].forEach(function (kind) { // receive even when we have nothing to send
      if (!track(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    });
    pc.ontrack = function (ev) {
      p.stream.addTrack(ev.track);
      ev.track.onended = function () { p.stream.removeTrack(ev.track); };
    };
    pc.onicecandidate = function (ev) { send({ type: "candidate", to: peer, candidate: ev.candidate ? ev.candidate.toJSON() : null }); };
    pc.onnegotiationneeded = async function () {
      try {
        p.makingOffer = true;
        await pc.setLocalDescription();
        send({ type: "offer", to: peer, sdp: pc.localDescription.sdp });
      } catch (e) { console.warn("offer failed", e); } finally { p.makingOffer = false; }
    };
    pc.oniceconnectionstatechange = function () {
      if (pc.iceConnectionState === "failed" && !p.polite) restart(peer); // the impolite side restarts
      refreshStatus();
    };
    pc.onconnectionstatechange = refreshStatus;
    return p;
  }

  // -- SFU (Janus through the server) ---------------------------------------------------------------
  function gathered(pc) { // complete descriptions: the server does not trickle to Janus
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      var done = function () { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
  }

  function resetSfu() {
    if (state.sfuPub) state.sfuPub.close();
    state.sfuPub = null;
    state.feeds.clear();
    Array.from(state.pcs.keys()).forEach(dropPeer);
  }

  async function publish() {
    if (!state.screenTrack && !(state.localStream && state.localStream.getTracks().length)) {
      // Nothing to send (no camera or microphone): join to receive only; a device found later publishes.
      send({ type: "sfu-watch" });
      return;
    }
    var pc = new RTCPeerConnection({ iceServers: state.iceServers, iceTransportPolicy: state.policy });
    state.sfuPub = pc;
    ["audio", "video"].forEach(function (kind) { // a sender for each kind, so video can come back later
      var t = track(kind);
      if (kind === "video" && state.screenTrack) t = state.screenTrack;
      var tr = t ? pc.addTransceiver(t, { direction: "sendonly", streams: [state.localStream] })
        : pc.addTransceiver(kind, { direction: "sendonly" });
      tr.sender._kind = kind;
    });
    pc.onconnectionstatechange = refreshStatus;
    pc.oniceconnectionstatechange = function () { if (pc.iceConnectionState === "failed") restartSfu(); };
    await pc.setLocalDescription();
    await gathered(pc);
    send({ type: "sfu-publish", sdp: pc.localDescription.sdp });
  }

  // A new network path to Janus (after a network change or a dropped socket): the publisher offers
  // again with new ICE credentials, and Janus is asked to offer each feed again the same way.
  async function restartSfu() {
    state.restarts += 1;
    state.pcs.forEach(function (p) { if (p.feed) send({ type: "sfu-restart", feed: p.feed }); });
    var pc = state.sfuPub;
    if (!pc || pc.signalingState === "closed") return;
    await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
    await gathered(pc);
    send({ type: "sfu-publish", sdp: pc.localDescription.sdp });
  }

  async function onFeedOffer(feed, sdp) {
    var peer = state.feeds.get(feed) || ("feed-" + feed);
    var old = state.pcs.get(peer);
    if (old && old.feed === feed && old.pc.signalingState === "stable") { // Janus renegotiates (an ICE restart)
      await old.pc.setRemoteDescription({ type: "offer", sdp: sdp });
      await old.pc.setLocalDescription();
      await gathered(old.pc);
      send({ type: "sfu-start", feed: feed, sdp: old.pc.localDescription.sdp });
      return;
    }
    if (old) old.pc.close();
    var pc = new RTCPeerConnection({ iceServers: state.iceServers, iceTransportPolicy: state.policy });
    var p = { pc: pc, name: state.names.get(peer) || "", feed: feed, polite: true, makingOffer: false, ignoreOffer: false, stream: new MediaStream() };
    state.pcs.set(peer, p);
    tileFor(peer, p.name).querySelector("video").srcObject = p.stream;
    pc.ontrack = function (ev) {
      p.stream.addTrack(ev.track);
      ev.track.onended = function () { p.stream.removeTrack(ev.track); };
    };
    pc.onconnectionstatechange = refreshStatus;
    pc.oniceconnectionstatechange = function () {
      if (pc.iceConnectionState === "failed") send({ type: "sfu-restart", feed: feed });
    };
    await pc.setRemoteDescription({ type: "offer", sdp: sdp });
    await pc.setLocalDescription();
    await gathered(pc);
    send({ type: "sfu-start", feed: feed, sdp: pc.localDescription.sdp });
  }

  function onFeedGone(feed) {
    var peer = state.feeds.get(feed);
    state.feeds.delete(feed);
    if (peer && state.pcs.has(peer) && state.pcs.get(peer).feed === feed) dropPeer(peer);
  }

  function restart(peer) {
    var p = state.pcs.get(peer);
    if (!p) return;
    state.restarts += 1;
    p.pc.restartIce();
  }

  function dropPeer(peer) {
    var p = state.pcs.get(peer);
    if (p) { p.pc.close(); state.pcs.delete(peer); }
    var fig = document.getElementById("tile-" + peer);
    if (fig) fig.remove();
    refreshStatus();
  }

  // A peer's descriptions and candidates are applied in the order they came: a candidate must not
  // be added while the description before it is still being set.
  var queues = new Map();
  function serially(peer, op) {
    var next = (queues.get(peer) || Promise.resolve()).then(op).catch(function (e) { console.warn(e); });
    queues.set(peer, next);
  }

  async function onDescription(from, type, sdp) {
    var p = state.pcs.get(from) || peerConnection(from, state.names.get(from) || "");
    var pc = p.pc;
    var collision = type === "offer" && (p.makingOffer || pc.signalingState !== "stable");
    p.ignoreOffer = !p.polite && collision;
    if (p.ignoreOffer) return;
    await pc.setRemoteDescription({ type: type, sdp: sdp });
    if (type === "offer") {
      await pc.setLocalDescription();
      send({ type: "answer", to: from, sdp: pc.localDescription.sdp });
    }
  }

  async function onCandidate(from, candidate) {
    var p = state.pcs.get(from);
    if (!p) return;
    try { await p.pc.addIceCandidate(candidate || null); } catch (e) { if (!p.ignoreOffer) console.warn(e); }
  }

  function refreshStatus() {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    var connected = Array.from(state.pcs.values()).some(function (p) { return p.pc.connectionState === "connected"; });
    setStatus(state.pcs.size === 0 ? msg("waiting") : connected ? msg("connected") : msg("connecting"));
  }

  // -- signalling --------------------------------------------------------------------------------
  async function connect(rejoin) {
    setStatus(rejoin ? msg("reconnecting") : msg("connecting"));
    var grant;
    try {
      grant = await Telemed.postJSON(root.dataset.joinUrl, {});
    } catch (err) {
      state.lastRefusal = (err && err.message) || "";
      if (err && err.status === 403) { setStatus(err.message || msg("refused")); return; }
      return retry();
    }
    state.policy = grant.iceTransportPolicy || "all";
    state.mode = grant.mode === "sfu" ? "sfu" : "mesh";
    root.dataset.mode = state.mode;
    if (grant.fallback) showNotice(msg("sfu-down"));
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + root.dataset.wsUrl);
    state.ws = ws;
    ws.onopen = function () {
      state.socketOpens += 1;
      ws.send(JSON.stringify({ type: "join", token: grant.token, peer: state.me, rejoin: !!rejoin }));
    };
    ws.onmessage = function (ev) { handle(JSON.parse(ev.data)); };
    ws.onclose = function () {
      if (state.ws === ws) state.ws = null;
      if (!state.leaving) retry();
    };
  }

  function retry() {
    setStatus(msg("reconnecting"));
    var wait = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 10000);
    setTimeout(function () { if (!state.leaving && !state.ws) connect(true); }, wait);
  }

  function handle(m) {
    switch (m.type) {
      case "joined":
        state.backoff = 1000;
        state.iceServers = m.iceServers || [];
        if (state.mode === "sfu") {
          m.peers.forEach(function (x) { state.names.set(x.peer, x.name); });
          if (!m.resumed || !state.sfuPub) { resetSfu(); publish().catch(function (e) { console.warn(e); }); }
          else restartSfu().catch(function (e) { console.warn(e); }); // back after a dropped socket: new ICE path
          announce();
          refreshStatus();
          break;
        }
        var present = new Set(m.peers.map(function (x) { return x.peer; }));
        Array.from(state.pcs.keys()).forEach(function (id) { if (!present.has(id)) dropPeer(id); });
        m.peers.forEach(function (x) {
          if (state.pcs.has(x.peer)) restart(x.peer); // back after a dropped socket: new ICE path
          else peerConnection(x.peer, x.name);
        });
        announce();
        refreshStatus();
        break;
      // The newcomer makes the offers; the others answer (fewer collisions than both offering).
      // If no offer comes (two joins crossed on different instances, each seeing the other as
      // the newcomer), call anyway after 3 s; perfect negotiation settles a collision.
      case "peer-joined":
        state.names.set(m.peer, m.name);
        if (state.mode === "sfu") {
          var fig = document.getElementById("tile-" + m.peer);
          if (fig) fig.querySelector("figcaption").textContent = m.name;
          break;
        }
        setTimeout(function () { if (!state.pcs.has(m.peer) && state.names.has(m.peer)) peerConnection(m.peer, m.name); }, 3000);
        refreshStatus();
        break;
      case "peer-left": state.names.delete(m.peer); dropPeer(m.peer); break;
      case "offer": case "answer":
        serially(m.from, function () { return onDescription(m.from, m.type, m.sdp); });
        break;
      case "candidate": serially(m.from, function () { return onCandidate(m.from, m.candidate); }); break;
      case "sfu-answer":
        if (state.sfuPub) state.sfuPub.setRemoteDescription({ type: "answer", sdp: m.sdp }).catch(function (e) { console.warn(e); });
        break;
      case "sfu-publishers":
        m.feeds.forEach(function (f) {
          if (state.feeds.has(f.feed)) return;
          state.feeds.set(f.feed, f.peer);
          send({ type: "sfu-subscribe", feed: f.feed });
        });
        break;
      case "sfu-offer": serially("feed-" + m.feed, function () { return onFeedOffer(m.feed, m.sdp); }); break;
      case "sfu-unpublished": onFeedGone(m.feed); break;
      case "record": onRecord(m); break;
      case "chat": addChat(m); break;
      case "state": peerState(m); break;
      case "error":
        if (m.code === "refused") { state.lastRefusal = m.detail; setStatus(msg("refused")); }
        if (m.code === "chat-failed") showNotice(msg("chat-failed"));
        if (m.code === "sfu" || m.code === "no-sfu") showNotice(msg("sfu-error"));
        if (m.code === "record") hideConsent();
        break;
    }
  }

  function peerState(m) {
    var fig = document.getElementById("tile-" + m.from);
    if (!fig) return;
    fig.dataset.audio = m.audio === false ? "off" : "on";
    fig.dataset.video = m.video === false ? "off" : "on";
    fig.dataset.screen = m.screen ? "on" : "off";
    var notes = [];
    if (m.audio === false) notes.push(msg("muted"));
    if (m.video === false) notes.push(msg("no-video"));
    if (m.screen) notes.push(msg("sharing"));
    fig.title = notes.join(", ");
    fig.querySelector(".tile-note").textContent = notes.join(" · ");
  }

  // -- chat ------------------------------------------------------------------------------------------
  function addChat(m) {
    var li = document.createElement("li");
    var who = document.createElement("strong");
    who.textContent = m.from === state.me ? msg("you") : m.name;
    var when = document.createElement("time");
    when.textContent = new Date(m.at).toLocaleTimeString();
    var text = document.createElement("span");
    text.textContent = m.text;
    li.appendChild(who); li.appendChild(when); li.appendChild(text);
    $("chat-log").appendChild(li);
    li.scrollIntoView({ block: "nearest" });
  }

  $("chat-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = $("chat-text");
    if (!input.value.trim()) return;
    send({ type: "chat", text: input.value.trim() });
    input.value = "";
  });

  // -- buttons ---------------------------------------------------------------------------------------
  $("btn-mute").addEventListener("click", function () {
    state.muted = !state.muted;
    var t = track("audio"); if (t) t.enabled = !state.muted;
    this.textContent = state.muted ? msg("unmute") : msg("mute");
    this.setAttribute("aria-pressed", state.muted);
    announce();
  });
  $("btn-camera").addEventListener("click", function () {
    state.cameraOff = !state.cameraOff;
    var t = track("video"); if (t) t.enabled = !state.cameraOff;
    this.textContent = state.cameraOff ? msg("camera-on") : msg("camera-off");
    this.setAttribute("aria-pressed", state.cameraOff);
    announce();
  });
  $("btn-audio-only").addEventListener("click", function () { setAudioOnly(!state.audioOnly, false); });
  $("btn-screen").addEventListener("click", toggleScreen);
  $("btn-leave").addEventListener("click", function () {
    state.leaving = true;
    stopRecorder();
    send({ type: "leave" });
    state.pcs.forEach(function (p, id) { dropPeer(id); });
    if (state.sfuPub) state.sfuPub.close();
    if (state.ws) state.ws.close();
    if (state.localStream) state.localStream.getTracks().forEach(function (t) { t.stop(); });
    location.href = root.dataset.caseUrl;
  });
  $("mic-select").addEventListener("change", function () { switchDevice("audio"); });
  $("cam-select").addEventListener("change", function () { switchDevice("video"); });

  async function setAudioOnly(on, automatic) {
    state.audioOnly = on;
    state.autoAudioOnly = automatic && on;
    $("btn-audio-only").textContent = on ? msg("video-on") : msg("audio-only");
    $("btn-audio-only").setAttribute("aria-pressed", on);
    showNotice(automatic && on ? msg("audio-only-auto") : "");
    if (on) {
      var t = track("video");
      if (t) { state.localStream.removeTrack(t); t.stop(); }
      sendingPcs().forEach(function (pc) {
        pc.getSenders().forEach(function (s) { if (s._kind === "video" && !state.screenTrack) s.replaceTrack(null); });
      });
    } else {
      await switchDevice("video");
    }
    state.poorSamples = 0;
    announce();
  }

  async function toggleScreen() {
    if (state.screenTrack) return stopScreen();
    try {
      var s = await navigator.mediaDevices.getDisplayMedia({ video: true });
      state.screenTrack = s.getVideoTracks()[0];
      state.screenTrack.onended = stopScreen;
      sendingPcs().forEach(function (pc) {
        var sender = pc.getSenders().find(function (x) { return x._kind === "video"; });
        if (sender) sender.replaceTrack(state.screenTrack);
        else { var n = pc.addTrack(state.screenTrack, state.localStream); n._kind = "video"; }
      });
      $("local-video").srcObject = s;
      $("btn-screen").textContent = msg("stop-share");
      announce();
    } catch (e) { /* the user cancelled the picker */ }
  }

  function stopScreen() {
    if (!state.screenTrack) return;
    state.screenTrack.stop();
    state.screenTrack = null;
    var cam = track("video");
    sendingPcs().forEach(function (pc) {
      var sender = pc.getSenders().find(function (x) { return x._kind === "video"; });
      if (sender) sender.replaceTrack(cam || null);
    });
    $("local-video").srcObject = state.localStream;
    $("btn-screen").textContent = msg("share");
    announce();
  }

  // -- recording, with everyone's consent ----------------------------------------------------------------
  var audioCtx = null;
  function hideConsent() { $("record-consent").hidden = true; }

  function onRecord(m) {
    state.recording = m;
    var on = m.state === "on", asking = m.state === "asking";
    $("record-indicator").hidden = !on;
    $("btn-record").textContent = on || asking ? msg("stop-record") : msg("record");
    $("btn-record").setAttribute("aria-pressed", on || asking);
    var mine = m.recorder === state.me;
    if (asking && m.consented.indexOf(state.me) < 0 && m.required.indexOf(state.me) >= 0) {
      $("record-consent-text").textContent = msg("record-asked").replace("{name}", m.name || "");
      $("record-consent").hidden = false;
    } else {
      hideConsent();
    }
    if (asking) showNotice(mine ? msg("record-waiting") : "");
    if (on) showNotice("");
    if (on && mine && !state.recorder) startRecorder(m.id);
    if (!on && state.recorder && state.recorder.id === m.id) stopRecorder();
    if (m.state === "off") {
      if (m.action === "decline") showNotice(msg("record-declined"));
      else if (m.reason === "joined") showNotice(msg("record-stopped-join"));
      else if (!mine) showNotice("");
    }
  }

  function startRecorder(id) {
    var canvas = document.createElement("canvas");
    canvas.width = 960; canvas.height = 540;
    var g = canvas.getContext("2d");
    function draw() {
      var videos = Array.from(document.querySelectorAll("#video-grid video")).filter(function (v) { return v.videoWidth > 0; });
      g.fillStyle = "#101828"; g.fillRect(0, 0, canvas.width, canvas.height);
      var n = Math.max(1, videos.length), cols = Math.ceil(Math.sqrt(n)), rows = Math.ceil(n / cols);
      var w = canvas.width / cols, h = canvas.height / rows;
      videos.forEach(function (v, i) { g.drawImage(v, (i % cols) * w, Math.floor(i / cols) * h, w, h); });
    }
    draw();
    var stream = canvas.captureStream(10);
    try {
      audioCtx = audioCtx || new AudioContext();
      audioCtx.resume();
      var mix = audioCtx.createMediaStreamDestination();
      [state.localStream].concat(Array.from(state.pcs.values()).map(function (p) { return p.stream; })).forEach(function (s) {
        if (s && s.getAudioTracks().length) audioCtx.createMediaStreamSource(new MediaStream(s.getAudioTracks())).connect(mix);
      });
      mix.stream.getAudioTracks().forEach(function (t) { stream.addTrack(t); });
    } catch (e) { console.warn("no audio in the recording", e); }
    var type = MediaRecorder.isTypeSupported("video/webm;codecs=vp8,opus") ? "video/webm;codecs=vp8,opus" : "video/webm";
    var r = { id: id, chunks: [], timer: setInterval(draw, 100), media: new MediaRecorder(stream, { mimeType: type, videoBitsPerSecond: 600000 }) };
    r.media.ondataavailable = function (e) { if (e.data && e.data.size) r.chunks.push(e.data); };
    r.media.onstop = function () { clearInterval(r.timer); saveRecording(r); };
    r.media.start(1000);
    state.recorder = r;
    showNotice("");
  }

  function stopRecorder() {
    var r = state.recorder;
    state.recorder = null;
    if (r && r.media.state !== "inactive") r.media.stop();
  }

  function uploadPart(id, offset, blob) {
    return fetch("/portal/uploads/" + id, {
      method: "PATCH", credentials: "same-origin", body: blob,
      headers: { "X-CSRF-Token": csrf(), "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
    });
  }
  function csrf() { var m = document.querySelector('meta[name="csrf-token"]'); return m ? m.getAttribute("content") : ""; }

  async function saveRecording(r) {
    var blob = new Blob(r.chunks, { type: "video/webm" });
    showNotice(msg("record-saving"));
    try {
      var up = await Telemed.postJSON("/portal/uploads", { name: "recording-" + r.id + ".webm", type: "video/webm", size: blob.size });
      var offset = 0, failures = 0;
      while (offset < blob.size) {
        var res;
        try { res = await uploadPart(up.id, offset, blob.slice(offset, offset + up.chunk)); } catch (e) { res = null; }
        if (res && (res.ok || res.status === 409)) { offset = (await res.json()).offset; failures = 0; continue; }
        if (res && res.status !== 409 && res.status < 500) throw new Error("upload refused");
        failures += 1;
        if (failures > 30) throw new Error("network error");
        await new Promise(function (ok) { setTimeout(ok, Math.min(1000 * failures, 10000)); });
        var st = await fetch("/portal/uploads/" + up.id, { credentials: "same-origin" });
        if (st.ok) offset = (await st.json()).offset;
      }
      var saved = await Telemed.postJSON(root.dataset.recordingsUrl, { recording: r.id, upload: up.id });
      state.savedRecordings.push(saved && saved.id);
      showNotice(msg("record-saved"));
    } catch (e) {
      state.recordError = (e && e.message) || "failed";
      showNotice(msg("record-failed"));
    }
  }

  $("btn-record").addEventListener("click", function () {
    audioCtx = audioCtx || new AudioContext(); // created on the click: browsers start audio only after a gesture
    var r = state.recording, active = r && (r.state === "on" || r.state === "asking");
    send({ type: "record", action: active ? "stop" : "request" });
  });
  $("btn-consent").addEventListener("click", function () { hideConsent(); send({ type: "record", action: "consent" }); });
  $("btn-decline").addEventListener("click", function () { hideConsent(); send({ type: "record", action: "decline" }); });

  // -- network quality (getStats every 2 s) -----------------------------------------------------------
  var previous = new Map();
  async function sample() {
    var worst = null;
    for (var [id, p] of state.pcs) {
      if (p.pc.connectionState !== "connected") continue;
      var stats = await p.pc.getStats(), rtt = null, lost = 0, received = 0, outgoing = null;
      stats.forEach(function (r) {
        if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
          rtt = r.currentRoundTripTime; outgoing = r.availableOutgoingBitrate;
        }
        if (r.type === "inbound-rtp") { lost += r.packetsLost || 0; received += r.packetsReceived || 0; }
      });
      var prev = previous.get(id) || { lost: 0, received: 0 };
      previous.set(id, { lost: lost, received: received });
      var dl = lost - prev.lost, dr = received - prev.received;
      var loss = dl + dr > 0 ? dl / (dl + dr) : 0;
      var level = "good";
      if ((rtt !== null && rtt > 0.3) || loss > 0.03 || (outgoing !== null && outgoing < 300000)) level = "fair";
      if ((rtt !== null && rtt > 0.8) || loss > 0.1 || (outgoing !== null && outgoing < 120000)) level = "poor";
      var rank = { good: 0, fair: 1, poor: 2 };
      if (worst === null || rank[level] > rank[worst]) worst = level;
    }
    var el = $("net-quality");
    var level = worst || "none";
    el.dataset.level = level;
    el.textContent = msg("quality-" + level);
    // Automatic audio-only fallback after 10 s of a poor link; the button brings video back.
    state.poorSamples = level === "poor" ? state.poorSamples + 1 : 0;
    if (state.poorSamples >= 5 && !state.audioOnly) setAudioOnly(true, true);
  }

  setInterval(function () { sample().catch(function () {}); }, 2000);
  setInterval(function () { send({ type: "ping" }); }, 20000);
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", listDevices);
  }
  window.addEventListener("pagehide", function () { if (!state.leaving) send({ type: "leave" }); });

  openMedia().then(function () { connect(false); });
})();
