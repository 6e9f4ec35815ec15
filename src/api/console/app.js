// ptz-edge operator console: plain JavaScript, no build step, served from the binary.
//
// Views (by URL hash): "#/" the camera list with live tiles, "#/add" and "#/edit/<id>" the
// connect form, "#/camera/<id>" one camera with its PTZ joystick, presets and details.
// Every live picture is its own WebSocket (`/ws`, binary frames sized to the element),
// which also brings the camera's state pushes; the list itself is polled (GET
// /api/cameras) every few seconds for cameras added or removed elsewhere.
"use strict";

(() => {
  const TOKEN_KEY = "ptzEdgeToken";
  const MEMORY_KEY = "ptzEdgeCameras"; // what this browser connected, without passwords
  const LIST_EVERY_MS = 3000;
  const STATUS_EVERY_MS = 2000;
  const POSITION_EVERY_MS = 1000;
  // The appliance stops a move not refreshed within 1 s (its dead-man); refresh well inside.
  const MOVE_REFRESH_MS = 300;
  const MOVE_THROTTLE_MS = 100;
  const KEY_SPEED = 0.5;
  const ZOOM_SPEED = 0.5;
  const DEADZONE = 0.12;
  // The widths the appliance serves (docs/API.md, "Sizes and qualities served").
  const WIDTHS = [320, 480, 640, 960, 1280, 1920];
  const PTZOPTICS = ["visca-tcp", "visca-udp", "cgi"];
  const PTZ_PORTS = { "visca-tcp": 5678, "visca-udp": 1259, cgi: 80, "visca-sony": 52381 };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---------------------------------------------------------------------------------
  // The API: token, fetch, WebSocket URL

  let token = localStorage.getItem(TOKEN_KEY) || "";
  let tokenWaiters = [];

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // Resolves with the JSON reply; rejects with ApiError. A 401 shows the token prompt
  // and retries once a token was entered.
  async function api(method, path, body) {
    for (;;) {
      const headers = {};
      if (token) headers.Authorization = "Bearer " + token;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let r;
      try {
        r = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: "no-store",
        });
      } catch (e) {
        throw new ApiError(0, "the appliance cannot be reached (" + e.message + ")");
      }
      if (r.status === 401) {
        await askToken(token ? "That token was refused." : "");
        continue;
      }
      let data = null;
      try {
        data = await r.json();
      } catch (_) {
        data = null;
      }
      if (!r.ok) {
        const detail = data && data.detail ? data.detail : r.status + " " + r.statusText;
        throw new ApiError(r.status, detail);
      }
      return data;
    }
  }

  function askToken(why) {
    $("token-error").textContent = why;
    $("token-overlay").hidden = false;
    $("token-input").focus();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    localStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-overlay").hidden = true;
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((w) => w());
    // Live views opened before the token was known reconnect with it.
    lives.forEach((l) => l.reconnect());
  });

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : "");
  }

  const camPath = (id, rest) => "/api/cameras/" + encodeURIComponent(id) + "/" + rest;

  let toastTimer = null;
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove("show"), 2500);
  }

  // What this browser connected (never the password), to fill the edit form: the
  // appliance's status does not repeat a camera's address.
  function memory() {
    try {
      return JSON.parse(localStorage.getItem(MEMORY_KEY) || "{}") || {};
    } catch (_) {
      return {};
    }
  }
  function remember(id, fields) {
    const m = memory();
    if (fields) m[id] = fields;
    else delete m[id];
    localStorage.setItem(MEMORY_KEY, JSON.stringify(m));
  }

  // ---------------------------------------------------------------------------------
  // A live picture: one WebSocket, binary frames drawn on a canvas, state pushes.

  const lives = new Set();

  class Live {
    // opts: {fps, onStatus(status), onError(message), onFrame(meta)}
    constructor(canvas, cameraId, opts) {
      this.canvas = canvas;
      this.ctx2d = canvas.getContext("2d");
      this.id = cameraId;
      this.opts = opts;
      this.ws = null;
      this.closed = false;
      this.retry = 500;
      this.timer = null;
      this.width = 0;
      this.decoding = false;
      this.pending = null;
      this.frames = 0;
      this.fpsShown = 0;
      this.fpsSince = performance.now();
      this.meta = null;
      lives.add(this);
      this.resizeObs = new ResizeObserver(() => this.resubscribeIfResized());
      this.resizeObs.observe(canvas);
      this.open();
    }

    // The width to ask for: the smallest of the appliance's widths that covers the
    // element's device pixels (it snaps any other value down), so the picture is never
    // stretched and never larger than needed.
    wantWidth() {
      const px = this.canvas.clientWidth * (window.devicePixelRatio || 1) || 640;
      return WIDTHS.find((w) => w >= px - 1) || WIDTHS[WIDTHS.length - 1];
    }

    open() {
      if (this.closed) return;
      let ws;
      try {
        ws = new WebSocket(wsUrl());
      } catch (e) {
        this.scheduleReconnect();
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        this.retry = 500;
        this.subscribe();
      };
      ws.onmessage = (ev) => this.onMessage(ev.data);
      ws.onclose = () => {
        if (this.ws === ws) {
          this.ws = null;
          this.scheduleReconnect();
        }
      };
      ws.onerror = () => {};
    }

    scheduleReconnect() {
      if (this.closed || this.timer) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.open();
      }, this.retry);
      this.retry = Math.min(this.retry * 2, 5000);
    }

    reconnect() {
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close();
      }
      clearTimeout(this.timer);
      this.timer = null;
      this.retry = 500;
      this.open();
    }

    subscribe() {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (document.hidden) return;
      this.width = this.wantWidth();
      this.send({ action: "subscribe", cameraId: this.id, fps: this.opts.fps || 10, binary: true, width: this.width });
    }

    resubscribeIfResized() {
      const w = this.wantWidth();
      if (this.width && w !== this.width) this.subscribe();
    }

    visibility() {
      if (document.hidden) this.send({ action: "unsubscribe" });
      else this.subscribe();
    }

    send(msg) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(msg));
        return true;
      }
      return false;
    }

    onMessage(data) {
      if (typeof data === "string") {
        let m;
        try {
          m = JSON.parse(data);
        } catch (_) {
          return;
        }
        if (m.type === "status" && this.opts.onStatus) this.opts.onStatus(m);
        else if (m.type === "error" && this.opts.onError) this.opts.onError(m.message || "error");
        else if (m.type === "change" && this.opts.onChange) this.opts.onChange(m);
        else if (m.type === "frame" && m.data) {
          // A text frame (should not come: we ask for binary); draw it all the same.
          const bytes = Uint8Array.from(atob(m.data), (c) => c.charCodeAt(0));
          this.draw(bytes, m);
        }
        return;
      }
      // Binary: 2-byte big-endian length N, N bytes of JSON, then the JPEG.
      const view = new DataView(data);
      if (view.byteLength < 2) return;
      const n = view.getUint16(0);
      let meta = {};
      try {
        meta = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 2, n)));
      } catch (_) {
        return;
      }
      this.draw(new Uint8Array(data, 2 + n), meta);
    }

    // One decode at a time; a frame arriving meanwhile replaces the waiting one.
    draw(jpeg, meta) {
      if (this.decoding) {
        this.pending = [jpeg, meta];
        return;
      }
      this.decoding = true;
      const blob = new Blob([jpeg], { type: "image/jpeg" });
      decodeJpeg(blob)
        .then((img) => {
          if (this.closed) return;
          const w = img.width, h = img.height;
          if (this.canvas.width !== w || this.canvas.height !== h) {
            this.canvas.width = w;
            this.canvas.height = h;
          }
          this.ctx2d.drawImage(img, 0, 0);
          if (img.close) img.close();
          this.meta = meta;
          this.canvas.dataset.seq = meta.seq;
          this.canvas.dataset.frames = ++this.frames;
          const now = performance.now();
          if (now - this.fpsSince >= 1000) {
            this.fpsShown = (this.frames - (this.framesAtFps || 0)) * 1000 / (now - this.fpsSince);
            this.framesAtFps = this.frames;
            this.fpsSince = now;
          }
          if (this.opts.onFrame) this.opts.onFrame(meta, this.fpsShown);
        })
        .catch(() => {})
        .finally(() => {
          this.decoding = false;
          if (this.pending && !this.closed) {
            const [j, m] = this.pending;
            this.pending = null;
            this.draw(j, m);
          }
        });
    }

    close() {
      this.closed = true;
      lives.delete(this);
      this.resizeObs.disconnect();
      clearTimeout(this.timer);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close();
      }
    }
  }

  function decodeJpeg(blob) {
    if (window.createImageBitmap) return createImageBitmap(blob);
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(blob);
      const img = new Image();
      img.onload = () => {
        URL.revokeObjectURL(url);
        resolve(img);
      };
      img.onerror = () => {
        URL.revokeObjectURL(url);
        reject(new Error("bad JPEG"));
      };
      img.src = url;
    });
  }

  document.addEventListener("visibilitychange", () => lives.forEach((l) => l.visibility()));

  function setBadge(badge, state) {
    badge.textContent = state;
    badge.className = "badge " + state;
  }

  let version = "";
  function showCount(n) {
    $("health").textContent = (version ? "v" + version + " · " : "") + n + " camera" + (n === 1 ? "" : "s");
  }

  // ---------------------------------------------------------------------------------
  // Views

  let leaveView = null; // what the current view tears down (sockets, timers)

  function route() {
    if (leaveView) {
      leaveView();
      leaveView = null;
    }
    const hash = location.hash.replace(/^#\/?/, "");
    const [view, ...rest] = hash.split("/");
    const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
    for (const v of ["view-list", "view-form", "view-camera"]) $(v).hidden = true;
    $("add-link").hidden = view !== "";
    if (view === "add") leaveView = showForm(null);
    else if (view === "edit" && arg) leaveView = showForm(arg);
    else if (view === "camera" && arg) leaveView = showCamera(arg);
    else leaveView = showList();
  }

  // The camera list: a tile per camera, each with its own live picture.
  function showList() {
    $("view-list").hidden = false;
    const tiles = $("tiles");
    const shown = new Map(); // id -> {tile, live, badge, info, err}
    let timer = null;
    let stopped = false;
    let failing = false;

    const update = (entry, s) => {
      setBadge(entry.badge, s.state || "?");
      const fps = typeof s.frameRate === "number" ? s.frameRate.toFixed(1) + " fps" : "";
      const size = s.width && s.height ? s.width + "×" + s.height : "";
      entry.info.textContent = [s.codec, size, fps].filter(Boolean).join(" · ");
      entry.err.textContent = s.state !== "streaming" && s.lastError ? s.lastError : "";
      entry.tile.dataset.state = s.state || "";
    };

    const refresh = async () => {
      let cams;
      try {
        cams = (await api("GET", "/api/cameras")).cameras || [];
        failing = false;
      } catch (e) {
        // Say it once per outage, not every poll; the tiles stay as they were.
        if (!stopped && !failing) toast(e.message);
        failing = true;
      }
      if (stopped) return;
      if (!cams) {
        timer = setTimeout(refresh, LIST_EVERY_MS);
        return;
      }
      const ids = new Set(cams.map((c) => c.cameraId));
      for (const [id, entry] of shown) {
        if (!ids.has(id)) {
          entry.live.close();
          entry.tile.remove();
          shown.delete(id);
        }
      }
      for (const c of cams) {
        let entry = shown.get(c.cameraId);
        if (!entry) {
          const tile = el("a", "tile");
          tile.href = "#/camera/" + encodeURIComponent(c.cameraId);
          tile.dataset.camera = c.cameraId;
          const live = el("div", "live");
          const canvas = el("canvas");
          canvas.width = 640;
          canvas.height = 360;
          const overlay = el("span", "overlay");
          live.append(canvas, overlay);
          const cap = el("div", "caption");
          const name = el("span", "name", c.cameraId);
          const info = el("span", "muted small");
          const badge = el("span", "badge");
          cap.append(name, info, badge);
          const err = el("p", "error");
          tile.append(live, cap, err);
          tiles.append(tile);
          entry = { tile, badge, info, err };
          entry.live = new Live(canvas, c.cameraId, {
            fps: 10,
            onStatus: (s) => {
              update(entry, s);
              tile.dataset.pushed = s.state || ""; // the last state the WebSocket pushed
            },
            onFrame: (m, fps) => {
              overlay.textContent = m.width + "×" + m.height + (fps ? " · " + fps.toFixed(0) + " fps" : "");
            },
            // Change watching: the tile lights up for a few seconds on each event.
            onChange: () => {
              tile.dataset.changes = String((Number(tile.dataset.changes) || 0) + 1);
              tile.classList.add("changed");
              clearTimeout(entry.flash);
              entry.flash = setTimeout(() => tile.classList.remove("changed"), 3000);
            },
          });
          shown.set(c.cameraId, entry);
        }
        update(entry, c);
      }
      $("list-empty").hidden = cams.length > 0;
      showCount(cams.length);
      timer = setTimeout(refresh, LIST_EVERY_MS);
    };
    refresh();
    return () => {
      stopped = true;
      clearTimeout(timer);
      for (const entry of shown.values()) entry.live.close();
      tiles.replaceChildren();
    };
  }

  // ---------------------------------------------------------------------------------
  // The connect form (add and edit)

  function showForm(editId) {
    $("view-form").hidden = false;
    const form = $("cam-form");
    form.reset();
    $("form-error").textContent = "";
    $("form-title").textContent = editId ? "Edit " + editId : "Add a camera";
    $("form-submit").textContent = editId ? "Save and reconnect" : "Connect";
    $("form-submit").disabled = false;
    $("f-id").readOnly = !!editId;
    $("f-pass-note").hidden = !editId;
    $("form-cancel").href = editId ? "#/camera/" + encodeURIComponent(editId) : "#/";
    let stopped = false;

    if (editId) {
      $("f-id").value = editId;
      const m = memory()[editId] || {};
      $("f-ip").value = m.ip || "";
      $("f-port").value = m.port || "";
      $("f-path").value = m.streamPath || "";
      $("f-transport").value = m.transport || "auto";
      $("f-user").value = m.username || "";
      // The status tells the PTZ protocol and port even when this browser did not connect it.
      api("GET", camPath(editId, "status"))
        .then((s) => {
          if (stopped) return;
          if (s.ptz) {
            // A protocol this page does not list (a newer appliance) is kept as it is.
            const select = $("f-ptz");
            if (![...select.options].some((o) => o.value === s.ptz.protocol)) {
              select.append(el("option", "", s.ptz.protocol));
              select.lastChild.value = s.ptz.protocol;
            }
            select.value = s.ptz.protocol;
            $("f-ptz-port").value = s.ptz.port || "";
          } else if (m.ptz) {
            $("f-ptz").value = m.ptz.protocol;
            $("f-ptz-port").value = m.ptz.port || "";
          }
          ptzPortHint();
        })
        .catch(() => {});
      $("discover").hidden = true;
    } else {
      discover(() => stopped);
    }
    ptzPortHint();
    setTimeout(() => (editId ? $("f-ip") : $("f-id")).focus({ preventScroll: true }), 0);
    return () => {
      stopped = true;
      $("f-pass").value = "";
    };
  }

  function ptzPortHint() {
    const p = $("f-ptz").value;
    $("f-ptz-port").disabled = p === "none";
    $("f-ptz-port").placeholder = PTZ_PORTS[p] ? String(PTZ_PORTS[p]) : "";
  }
  $("f-ptz").addEventListener("change", ptzPortHint);

  function formBody() {
    const v = (id) => $(id).value.trim();
    const body = { cameraId: v("f-id"), ip: v("f-ip"), username: v("f-user"), password: $("f-pass").value };
    if (!body.cameraId) throw new Error("Camera id is required");
    if (/[\/?#%\\]/.test(body.cameraId) || /[\x00-\x1f\x7f]/.test(body.cameraId)) {
      throw new Error("Camera id may not contain / ? # % \\ or control characters");
    }
    if (!body.ip) throw new Error("Address is required");
    const path = v("f-path");
    if (path) body.streamPath = path.startsWith("/") ? path : "/" + path;
    const port = v("f-port");
    if (port) body.port = Number(port);
    const transport = v("f-transport");
    if (transport && transport !== "auto") body.transport = transport;
    const protocol = v("f-ptz");
    if (protocol && protocol !== "none") {
      body.ptz = { protocol };
      const pp = v("f-ptz-port");
      if (pp) body.ptz.port = Number(pp);
    }
    return body;
  }

  $("cam-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    let body;
    try {
      body = formBody();
    } catch (err) {
      $("form-error").textContent = err.message;
      return;
    }
    $("form-error").textContent = "";
    const submit = $("form-submit");
    const label = submit.textContent;
    submit.disabled = true;
    submit.textContent = "Connecting…";
    try {
      await api("POST", "/api/cameras/connect", body);
      const { password, ...kept } = body;
      remember(body.cameraId, kept);
      $("f-pass").value = "";
      toast(body.cameraId + " connected");
      location.hash = "#/camera/" + encodeURIComponent(body.cameraId);
    } catch (err) {
      $("form-error").textContent = err.message;
    } finally {
      submit.disabled = false;
      submit.textContent = label;
    }
  });

  // ONVIF discovery, where the appliance has it (GET /api/discover); a 404 hides it.
  let discoverAvailable = true;
  async function discover(isStopped) {
    const box = $("discover");
    if (!discoverAvailable) {
      box.hidden = true;
      return;
    }
    const list = $("discover-list");
    $("discover-note").textContent = "Searching…";
    list.replaceChildren();
    let data;
    try {
      data = await api("GET", "/api/discover");
    } catch (e) {
      if (e.status === 404 || e.status === 405 || e.status === 501) {
        discoverAvailable = false;
        box.hidden = true;
      } else if (!isStopped()) {
        box.hidden = false;
        $("discover-note").textContent = "Search failed: " + e.message;
      }
      return;
    }
    if (isStopped()) return;
    box.hidden = false;
    const found = Array.isArray(data) ? data : (data && (data.devices || data.cameras || data.results)) || [];
    $("discover-note").textContent = found.length ? "Pick one to fill the form:" : "No camera answered.";
    for (const d of found) {
      const ip = discoveredIp(d);
      const name = d.name || d.model || d.hardware || ip || "camera";
      const b = el("button", "");
      b.type = "button";
      b.append(el("strong", "", name), el("span", "muted small", [ip, d.hardware, d.manufacturer].filter(Boolean).join(" · ")));
      b.addEventListener("click", () => {
        if (ip) $("f-ip").value = ip;
        if (!$("f-id").value) $("f-id").value = String(name).toLowerCase().replace(/[^a-z0-9_.-]+/g, "-").slice(0, 64);
        if (d.rtspPort || d.port) $("f-port").value = d.rtspPort || d.port;
        if (d.streamPath) $("f-path").value = d.streamPath;
        $("f-user").focus();
      });
      const li = el("li");
      li.append(b);
      list.append(li);
    }
  }
  $("discover-again").addEventListener("click", () => discover(() => $("view-form").hidden));

  function discoveredIp(d) {
    const direct = d.ip || d.address || d.host;
    if (direct) return String(direct);
    const url = d.xaddr || d.serviceUrl || d.xaddrs || (Array.isArray(d.urls) && d.urls[0]);
    if (!url) return "";
    try {
      return new URL(Array.isArray(url) ? url[0] : String(url).split(" ")[0]).hostname;
    } catch (_) {
      return "";
    }
  }

  // ---------------------------------------------------------------------------------
  // One camera: live view, PTZ, details, edit and remove

  function showCamera(id) {
    $("view-camera").hidden = false;
    $("cam-title").textContent = id;
    $("cam-edit").href = "#/edit/" + encodeURIComponent(id);
    $("ptz-pos").textContent = "";
    $("cam-change").textContent = "";
    setMsg("");
    $("cam-details").replaceChildren();
    setBadge($("cam-state"), "…");
    $("view-camera").dataset.state = "";
    let stopped = false;
    let statusTimer = null;
    let posTimer = null;
    let ptzInfo = undefined; // undefined: not known yet; null: no PTZ

    const live = new Live($("cam-canvas"), id, {
      fps: 15,
      onStatus: (s) => showStatus(s),
      onError: (m) => setMsg(m, true),
      onChange: (m) => {
        $("cam-change").textContent =
          "Scene changed at " + new Date(m.timestamp * 1000).toLocaleTimeString() +
          " (" + Math.round(m.score * 100) + " % of the picture, #" + m.seq + ")";
      },
      onFrame: (m, fps) => {
        $("cam-overlay").textContent =
          m.width + "×" + m.height + " · #" + m.seq + (fps ? " · " + fps.toFixed(0) + " fps" : "") +
          (typeof m.age === "number" ? " · " + Math.round(m.age * 1000) + " ms" : "");
      },
    });

    const showStatus = (s) => {
      setBadge($("cam-state"), s.state || "?");
      $("view-camera").dataset.state = s.state || "";
      const rows = [
        ["State", s.state],
        ["Codec", s.codec || "–"],
        ["Picture", s.width && s.height ? s.width + "×" + s.height : "–"],
        ["Decoder", (s.decoder || "–") + (s.decoding ? " (decoding)" : " (paused)")],
        ["Frame rate", typeof s.frameRate === "number" ? s.frameRate.toFixed(1) + " fps" : "–"],
        ["Frames", s.frameCount],
        ["Reconnects", s.reconnects],
        ["Dropped frames", s.droppedFrames],
        ["Lagging", s.lagging ? "yes" : "no"],
        ["Viewers", s.viewers],
        ["JPEG encodes", s.jpegEncodes],
        [
          "Change watching",
          s.watch && s.watch.enabled
            ? (s.watch.mode || "waiting") + ", " + s.watch.events + " events, " +
              (s.watch.scoredPerSecond || 0) + " scored/s"
            : "off",
        ],
        ["PTZ", s.ptz ? s.ptz.protocol + " :" + s.ptz.port + " (" + s.ptz.link + ")" : "none"],
        ["Last error", s.lastError || (s.ptz && s.ptz.lastError) || "none"],
      ];
      const dl = $("cam-details");
      dl.replaceChildren();
      for (const [k, v] of rows) {
        const dd = el("dd", "", v === undefined || v === null ? "–" : String(v));
        dd.dataset.field = k;
        if (k === "Last error" && v !== "none") dd.classList.add("bad");
        dl.append(el("dt", "", k), dd);
      }
      const had = ptzInfo;
      ptzInfo = s.ptz || null;
      $("ptz-panel").hidden = !ptzInfo;
      $("no-ptz").hidden = !!ptzInfo;
      if (ptzInfo) {
        $("preset-index").max = PTZOPTICS.includes(ptzInfo.protocol) ? 89 : 254;
        if (had === undefined || (had && had.protocol !== ptzInfo.protocol)) pollPosition();
      }
    };

    const pollStatus = async () => {
      try {
        showStatus(await api("GET", camPath(id, "status")));
      } catch (e) {
        if (stopped) return;
        if (e.status === 404) {
          setBadge($("cam-state"), "gone");
          setMsg("This camera is not connected (removed?).", true);
        }
      }
      if (!stopped) statusTimer = setTimeout(pollStatus, STATUS_EVERY_MS);
    };

    // The head's position (VISCA only: CGI has no position query).
    const pollPosition = async () => {
      clearTimeout(posTimer);
      if (stopped || !ptzInfo || ptzInfo.protocol === "cgi") {
        $("ptz-pos").textContent = "";
        return;
      }
      try {
        const p = await api("GET", camPath(id, "ptz"));
        $("ptz-pos").textContent = "pan " + p.pan + " · tilt " + p.tilt + " · zoom " + p.zoom;
      } catch (e) {
        $("ptz-pos").textContent = "";
      }
      if (!stopped) posTimer = setTimeout(pollPosition, POSITION_EVERY_MS);
    };

    // PTZ commands. Moves and stops go over the live view's WebSocket (no HTTP round trip
    // per tick), or over REST while it is not open; one-off commands use REST for their
    // answer.
    const rest = (command) => api("POST", camPath(id, "ptz"), command);
    const sendMove = (command) => {
      if (!live.send({ action: "ptz", cameraId: id, command })) {
        rest(command).catch((e) => setMsg(e.message, true));
      }
    };
    pad.bind(sendMove);

    const once = (command, done) => {
      rest(command)
        .then(() => setMsg(done))
        .catch((e) => setMsg(e.message, true));
    };
    const presetIndex = () => {
      const n = Number($("preset-index").value);
      const max = Number($("preset-index").max);
      if (!Number.isInteger(n) || n < 0 || n > max) {
        setMsg("Preset index must be 0–" + max, true);
        return null;
      }
      return n;
    };
    const handlers = [
      [$("home"), "click", () => once({ action: "home" }, "Home")],
      [$("preset-go"), "click", () => {
        const n = presetIndex();
        if (n !== null) once({ action: "preset", op: "goto", index: n }, "Went to preset " + n);
      }],
      [$("preset-save"), "click", () => {
        const n = presetIndex();
        if (n !== null) once({ action: "preset", op: "save", index: n }, "Saved preset " + n);
      }],
      [$("cam-remove"), "click", (e) => removeCamera(e.currentTarget)],
    ];
    for (const [target, type, fn] of handlers) target.addEventListener(type, fn);
    const zoomIn = holdButton($("zoom-in"), () => ({ action: "move", zoom: ZOOM_SPEED }), sendMove);
    const zoomOut = holdButton($("zoom-out"), () => ({ action: "move", zoom: -ZOOM_SPEED }), sendMove);

    let armTimer = null;
    const removeCamera = async (button) => {
      // Two taps: the first arms the button for 4 s (no blocking confirm() dialog).
      if (!button.classList.contains("armed")) {
        button.classList.add("armed");
        button.textContent = "Tap again to remove";
        armTimer = setTimeout(disarm, 4000);
        return;
      }
      disarm();
      try {
        await api("POST", "/api/cameras/disconnect", { cameraId: id });
        remember(id, null);
        toast(id + " removed");
        location.hash = "#/";
      } catch (e) {
        setMsg(e.message, true);
      }
    };
    const disarm = () => {
      clearTimeout(armTimer);
      $("cam-remove").classList.remove("armed");
      $("cam-remove").textContent = "Remove";
    };

    pollStatus();
    return () => {
      stopped = true;
      clearTimeout(statusTimer);
      clearTimeout(posTimer);
      disarm();
      pad.bind(null);
      zoomIn();
      zoomOut();
      for (const [target, type, fn] of handlers) target.removeEventListener(type, fn);
      live.close();
    };
  }

  function setMsg(text, bad) {
    const m = $("ptz-msg");
    m.textContent = text;
    m.classList.toggle("bad", !!bad);
  }

  // A button that moves while held (pointer or keyboard) and stops on release. Returns
  // its teardown.
  function holdButton(button, command, send) {
    let timer = null;
    const start = (e) => {
      if (e.type === "keydown" && (e.repeat || (e.key !== " " && e.key !== "Enter"))) return;
      e.preventDefault();
      if (timer) return;
      if (e.pointerId !== undefined) button.setPointerCapture(e.pointerId);
      send(command());
      timer = setInterval(() => send(command()), MOVE_REFRESH_MS);
    };
    const stop = () => {
      if (!timer) return;
      clearInterval(timer);
      timer = null;
      send({ action: "stop" });
    };
    const events = [
      ["pointerdown", start], ["pointerup", stop], ["pointercancel", stop], ["lostpointercapture", stop],
      ["keydown", start], ["keyup", stop], ["blur", stop], ["contextmenu", (e) => e.preventDefault()],
    ];
    for (const [t, f] of events) button.addEventListener(t, f);
    return () => {
      stop();
      for (const [t, f] of events) button.removeEventListener(t, f);
    };
  }

  // The pan/tilt joystick: drag (mouse, pen or touch; pointer capture keeps the drag
  // when the finger leaves the pad) or hold arrow keys while it has focus. While held the
  // move is re-sent every MOVE_REFRESH_MS (the appliance's dead-man stops a move that is
  // not refreshed within 1 s); release sends a stop.
  function joystick() {
    let send = () => {};
    const pad = $("joystick");
    const knob = pad.querySelector(".knob");
    let vec = null; // {pan, tilt} while held
    let lastSent = 0;
    let lastKey = "";
    let refresh = null;
    let pointer = null;
    const keys = new Set();

    const key = (v) => v.pan.toFixed(2) + "," + v.tilt.toFixed(2) + "," + (v.zoom || 0).toFixed(2);
    const push = (force) => {
      if (!vec) return;
      const now = performance.now();
      const k = key(vec);
      if (!force && k === lastKey && now - lastSent < MOVE_REFRESH_MS) return;
      if (!force && now - lastSent < MOVE_THROTTLE_MS) return;
      lastSent = now;
      lastKey = k;
      const command = { action: "move", pan: vec.pan, tilt: vec.tilt };
      if (vec.zoom) command.zoom = vec.zoom;
      send(command);
    };
    const hold = (v) => {
      const first = !vec;
      vec = v;
      pad.classList.add("active");
      const r = pad.clientWidth / 2 - knob.clientWidth / 2;
      knob.style.transform = "translate(" + (v.pan * r).toFixed(1) + "px," + (-v.tilt * r).toFixed(1) + "px)";
      if (first) {
        push(true);
        refresh = setInterval(() => push(true), MOVE_REFRESH_MS);
      } else {
        push(false);
      }
    };
    const release = () => {
      if (!vec) return;
      vec = null;
      clearInterval(refresh);
      refresh = null;
      lastKey = "";
      pad.classList.remove("active");
      knob.style.transform = "";
      send({ action: "stop" });
    };
    const fromPointer = (e) => {
      const box = pad.getBoundingClientRect();
      const r = box.width / 2;
      let x = (e.clientX - box.left - r) / r;
      let y = -(e.clientY - box.top - r) / r;
      const len = Math.hypot(x, y);
      if (len > 1) {
        x /= len;
        y /= len;
      }
      const dz = (v) => (Math.abs(v) < DEADZONE ? 0 : Math.round(v * 100) / 100);
      return { pan: dz(x), tilt: dz(y) };
    };

    pad.addEventListener("pointerdown", (e) => {
      if (pointer !== null) return;
      e.preventDefault();
      pointer = e.pointerId;
      pad.setPointerCapture(e.pointerId);
      pad.focus({ preventScroll: true });
      hold(fromPointer(e));
    });
    pad.addEventListener("pointermove", (e) => {
      if (e.pointerId === pointer) hold(fromPointer(e));
    });
    const up = (e) => {
      if (e.pointerId !== pointer) return;
      pointer = null;
      release();
    };
    pad.addEventListener("pointerup", up);
    pad.addEventListener("pointercancel", up);
    pad.addEventListener("lostpointercapture", up);
    pad.addEventListener("contextmenu", (e) => e.preventDefault());

    // Arrows pan and tilt, + and - zoom, at KEY_SPEED / ZOOM_SPEED while held.
    const KEYS = {
      ArrowLeft: [-1, 0, 0], ArrowRight: [1, 0, 0], ArrowUp: [0, 1, 0], ArrowDown: [0, -1, 0],
      "+": [0, 0, 1], "=": [0, 0, 1], "-": [0, 0, -1], _: [0, 0, -1],
    };
    const fromKeys = () => {
      let pan = 0, tilt = 0, zoom = 0;
      for (const k of keys) {
        pan += KEYS[k][0];
        tilt += KEYS[k][1];
        zoom += KEYS[k][2];
      }
      return { pan: Math.sign(pan) * KEY_SPEED, tilt: Math.sign(tilt) * KEY_SPEED, zoom: Math.sign(zoom) * ZOOM_SPEED };
    };
    // Returns whether the key was the joystick's.
    const keyDown = (e) => {
      if (!KEYS[e.key] || e.ctrlKey || e.metaKey || e.altKey) return false;
      e.preventDefault();
      if (e.repeat || keys.has(e.key)) return true;
      keys.add(e.key);
      hold(fromKeys());
      return true;
    };
    const keyUp = (e) => {
      if (!KEYS[e.key] || !keys.has(e.key)) return false;
      e.preventDefault();
      keys.delete(e.key);
      if (keys.size) hold(fromKeys());
      else if (pointer === null) release();
      return true;
    };
    pad.addEventListener("keydown", keyDown);
    // The same keys anywhere on the camera page, unless a field or button has the focus.
    const pageKey = (handler) => (e) => {
      if (!send.bound || $("view-camera").hidden || e.target === pad) return;
      if (e.target.closest && e.target.closest("input, select, textarea, button, a")) return;
      handler(e);
    };
    document.addEventListener("keydown", pageKey(keyDown));
    // A release always counts, wherever the focus went meanwhile.
    document.addEventListener("keyup", keyUp);
    window.addEventListener("blur", () => {
      keys.clear();
      if (pointer === null) release();
    });
    pad.addEventListener("blur", () => {
      keys.clear();
      if (pointer === null) release();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        keys.clear();
        pointer = null;
        release();
      }
    });
    // Binds the pad to a camera's command sender (null: none, releasing any hold).
    const bind = (sender) => {
      keys.clear();
      pointer = null;
      release();
      send = sender || (() => {});
      send.bound = !!sender;
    };
    return { bind };
  }
  const pad = joystick();

  // ---------------------------------------------------------------------------------
  // Start

  // The bar's version and camera count (/health needs no token), on each view.
  const health = () =>
    fetch("/health", { cache: "no-store" })
      .then((r) => r.json())
      .then((h) => {
        version = h.version;
        showCount(h.activeCameras);
      })
      .catch(() => {});
  window.addEventListener("hashchange", () => {
    route();
    health();
  });
  route();
  health();
})();
