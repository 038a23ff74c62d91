// steelcup web console: a small single-page client of the daemon's Docker-compatible API on
// this same origin (docs/console.md). Every call carries the bearer token the user logged in
// with; the daemon scopes it to that token's tenant exactly as for any other client.
"use strict";
(function () {
  const TOKEN_KEY = "steelcup.console.token";
  const view = document.getElementById("view");
  let cleanups = []; // what the current page must stop (timers, streams, sockets)

  // ---- DOM helper: elements from data, never from HTML strings (no injection) ----------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function toast(message, error) {
    const t = document.getElementById("toast");
    t.textContent = message;
    t.className = error ? "error" : "";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, error ? 8000 : 3000);
  }

  // ---- the API ---------------------------------------------------------------------------------
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function call(method, path, body, signal) {
    const headers = { Authorization: "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401) { logout("Your token was refused: log in again."); }
    if (!resp.ok) {
      let message = resp.status + " " + resp.statusText;
      try { message = (await resp.json()).message || message; } catch (e) { /* not JSON */ }
      throw new ApiError(resp.status, message);
    }
    return resp;
  }
  const api = async (method, path, body) => {
    const resp = await call(method, path, body);
    return resp.status === 204 || resp.headers.get("Content-Length") === "0" ? null
      : resp.json();
  };
  const get = (path) => api("GET", path);

  // JSON lines of a streamed answer (pull progress), each handed to `each`.
  async function jsonLines(resp, each) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, nl).trim();
        rest = rest.slice(nl + 1);
        if (line) each(JSON.parse(line));
      }
    }
  }

  // ---- login -------------------------------------------------------------------------------------
  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "#/login";
    if (message) toast(message, true);
  }

  function loginPage() {
    document.getElementById("top").hidden = true;
    const input = h("input", { id: "login-token", type: "password", autocomplete: "off",
      placeholder: "tenant key token or console token", required: true });
    const form = h("form", { class: "login", onsubmit: async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        await get("/info");
        location.hash = "#/containers";
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        toast("Login failed: " + e.message, true);
      }
    } },
      h("h1", {}, "steelcup console"),
      h("p", { class: "muted" }, "Log in with a tenant key's token (",
        h("code", {}, "steelcup tenant key create"), ") or, on a single-user install, the " +
        "console token the daemon printed at start."),
      input,
      h("button", { id: "login-submit", class: "primary", type: "submit" }, "Log in"));
    return form;
  }

  // ---- containers --------------------------------------------------------------------------------
  const shortId = (id) => id.replace(/^sha256:/, "").slice(0, 12);
  const nameOf = (c) => (c.Names && c.Names[0] || "").replace(/^\//, "");

  function portsText(ports) {
    return (ports || []).map((p) => p.PublicPort
      ? `${p.IP || "0.0.0.0"}:${p.PublicPort}->${p.PrivatePort}/${p.Type}`
      : `${p.PrivatePort}/${p.Type}`).join(", ");
  }

  function health(status) {
    const m = /\((healthy|unhealthy|health: starting)\)/.exec(status || "");
    return m ? m[1] : "";
  }

  // "sh -c 'echo hi'" -> ["sh", "-c", "echo hi"]: whitespace splits, quotes group.
  function splitCommand(text) {
    const words = [];
    const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
    let m;
    let word = null;
    let last = 0;
    while ((m = re.exec(text)) !== null) {
      const piece = m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1")
        : m[2] !== undefined ? m[2] : m[3];
      if (word !== null && m.index === last) word += piece;
      else { if (word !== null) words.push(word); word = piece; }
      last = re.lastIndex;
    }
    if (word !== null) words.push(word);
    return words;
  }

  // "8080:80, 53/udp" -> the create body's ExposedPorts and PortBindings.
  function portSpec(text) {
    const exposed = {};
    const bindings = {};
    for (const item of text.split(/[\s,]+/).filter(Boolean)) {
      const m = /^(?:(?:([\d.]+):)?(\d+):)?(\d+)(?:\/(tcp|udp))?$/.exec(item);
      if (!m) throw new Error(`bad port "${item}": use [HOST_IP:]HOST_PORT:PORT[/udp] or PORT`);
      const key = `${m[3]}/${m[4] || "tcp"}`;
      exposed[key] = {};
      if (m[2]) (bindings[key] = bindings[key] || []).push({ HostIp: m[1] || "", HostPort: m[2] });
    }
    return { exposed, bindings };
  }

  async function pullImage(ref, onStatus) {
    let [image, tag] = [ref, "latest"];
    const at = ref.lastIndexOf(":");
    if (at > ref.lastIndexOf("/") && !ref.includes("@")) [image, tag] = [ref.slice(0, at), ref.slice(at + 1)];
    const q = new URLSearchParams({ fromImage: image, tag });
    const resp = await call("POST", "/images/create?" + q);
    let failed = null;
    await jsonLines(resp, (msg) => {
      if (msg.error) failed = msg.error;
      onStatus(msg);
    });
    if (failed) throw new Error(failed);
  }

  async function runContainer(form) {
    const image = form.image.value.trim();
    const body = { Image: image, HostConfig: {} };
    const cmd = splitCommand(form.cmd.value);
    if (cmd.length) body.Cmd = cmd;
    const ports = portSpec(form.ports.value);
    body.ExposedPorts = ports.exposed;
    body.HostConfig.PortBindings = ports.bindings;
    const name = form.name.value.trim();
    const path = "/containers/create" + (name ? "?" + new URLSearchParams({ name }) : "");
    let created;
    try {
      created = await api("POST", path, body);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      toast(`pulling ${image}…`);
      await pullImage(image, () => {});
      created = await api("POST", path, body);
    }
    await api("POST", `/containers/${created.Id}/start`);
    return created.Id;
  }

  async function containersPage() {
    const tbody = h("tbody", { id: "containers" });
    const form = h("form", { class: "inline", id: "run-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const id = await runContainer(form);
        toast(`started ${shortId(id)}`);
        form.reset();
        await refresh();
      } catch (e) {
        toast("run failed: " + e.message, true);
      } finally {
        button.disabled = false;
      }
    } },
      h("label", {}, "Image", h("input", { name: "image", id: "run-image", required: true,
        placeholder: "busybox" })),
      h("label", {}, "Command", h("input", { name: "cmd", id: "run-cmd", size: 40,
        placeholder: "sh -c 'echo hello; sleep 3600'" })),
      h("label", {}, "Name", h("input", { name: "name", id: "run-name", placeholder: "optional" })),
      h("label", {}, "Ports", h("input", { name: "ports", id: "run-ports",
        placeholder: "8080:80" })),
      h("button", { class: "primary", id: "run-submit", type: "submit" }, "Run"));

    async function act(id, what) {
      try {
        if (what === "remove") await api("DELETE", `/containers/${id}?force=1`);
        else await api("POST", `/containers/${id}/${what}`);
        toast(`${what}: ${shortId(id)}`);
      } catch (e) {
        toast(`${what} failed: ${e.message}`, true);
      }
      await refresh();
    }

    async function refresh() {
      const list = await get("/containers/json?all=1");
      tbody.replaceChildren(...list.map((c) => {
        const name = nameOf(c);
        const button = (what, cls) => h("button", { type: "button", class: cls,
          "data-action": what, onclick: () => act(c.Id, what) }, what);
        return h("tr", { "data-name": name, "data-id": c.Id },
          h("td", {}, h("a", { href: `#/container/${c.Id}` }, name), h("br"),
            h("span", { class: "muted mono" }, shortId(c.Id))),
          h("td", { class: "mono" }, c.Image),
          h("td", { class: "state state-" + c.State }, c.State),
          h("td", { class: "muted" }, c.Status),
          h("td", {}, health(c.Status)),
          h("td", { class: "mono" }, portsText(c.Ports)),
          h("td", { class: "actions" }, c.State === "running"
            ? [button("stop"), button("restart")] : [button("start")],
          button("remove", "danger")));
      }));
      if (!list.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" },
        "No containers yet: run one above.")));
    }
    await refresh();
    const timer = setInterval(() => refresh().catch(() => {}), 3000);
    cleanups.push(() => clearInterval(timer));
    return [h("h1", {}, "Containers"), form,
      h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Image", "State", "Status", "Health",
        "Ports", ""].map((t) => h("th", {}, t)))), tbody)];
  }

  // ---- a container's page --------------------------------------------------------------------------
  // A line chart of the last `points` values on a canvas, redrawn on each push.
  class Chart {
    constructor(canvas, label, format, points = 60) {
      Object.assign(this, { canvas, label, format, points, values: [], max: 0 });
    }
    push(value, max) {
      this.values.push(value);
      if (this.values.length > this.points) this.values.shift();
      this.max = max;
      this.canvas.dataset.points = String(this.values.length);
      this.draw();
    }
    draw() {
      const c = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      c.width = c.clientWidth * ratio;
      c.height = c.clientHeight * ratio;
      const g = c.getContext("2d");
      g.scale(ratio, ratio);
      const w = c.clientWidth;
      const ht = c.clientHeight;
      // Scaled to what was seen (the limit is in the label: a 2 GiB limit would flatten it).
      const top = Math.max(...this.values, 1e-9) * 1.25;
      g.clearRect(0, 0, w, ht);
      g.strokeStyle = "#e3e6ea";
      for (let i = 1; i < 4; i++) {
        g.beginPath(); g.moveTo(0, ht * i / 4); g.lineTo(w, ht * i / 4); g.stroke();
      }
      g.strokeStyle = "#1f6feb";
      g.fillStyle = "rgba(31,111,235,.12)";
      g.lineWidth = 1.5;
      g.beginPath();
      const step = w / (this.points - 1);
      const x0 = w - (this.values.length - 1) * step;
      this.values.forEach((v, i) => {
        const x = x0 + i * step;
        const y = ht - 4 - (v / top) * (ht - 20);
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
      if (this.values.length > 1) {
        g.lineTo(w, ht); g.lineTo(x0, ht); g.closePath(); g.fill();
      }
      g.fillStyle = "#1d2430";
      g.font = "12px system-ui, sans-serif";
      const last = this.values[this.values.length - 1];
      g.fillText(`${this.label}: ${last === undefined ? "–" : this.format(last)}` +
        (this.max ? ` of ${this.format(this.max)}` : ""), 6, 14);
    }
  }

  const mib = (bytes) => (bytes / 1048576).toFixed(1) + " MiB";

  // docker's CPU %: the container's share of the host's CPU time between two readings.
  function cpuPercent(s) {
    const cpu = s.cpu_stats || {};
    const pre = s.precpu_stats || {};
    const used = (cpu.cpu_usage || {}).total_usage - ((pre.cpu_usage || {}).total_usage || 0);
    const system = (cpu.system_cpu_usage || 0) - (pre.system_cpu_usage || 0);
    if (!(used > 0) || !(system > 0)) return 0;
    return (used / system) * (cpu.online_cpus || 1) * 100;
  }

  function statsPane(id) {
    const cpuCanvas = h("canvas", { class: "chart", id: "cpu-chart" });
    const memCanvas = h("canvas", { class: "chart", id: "mem-chart" });
    const cpu = new Chart(cpuCanvas, "CPU", (v) => v.toFixed(1) + " %");
    const mem = new Chart(memCanvas, "Memory", mib);
    let stopped = false;
    let timer = null;
    async function poll() {
      const began = performance.now();
      try {
        const s = await get(`/containers/${id}/stats?stream=false`);
        cpu.push(cpuPercent(s), 0);
        const m = s.memory_stats || {};
        mem.push(m.usage || 0, m.limit || 0);
      } catch (e) { /* stopped: keep the last figures */ }
      if (!stopped) timer = setTimeout(poll, Math.max(0, 1000 - (performance.now() - began)));
    }
    poll();
    cleanups.push(() => { stopped = true; clearTimeout(timer); });
    return h("div", { class: "grid" }, h("div", { class: "card" }, cpuCanvas),
      h("div", { class: "card" }, memCanvas));
  }

  // docker's multiplexed stream (8-byte headers) or a terminal's raw one, as text chunks.
  function logDecoder(multiplexed) {
    const text = new TextDecoder();
    let buf = new Uint8Array(0);
    return (chunk) => {
      if (!multiplexed) return text.decode(chunk, { stream: true });
      const joined = new Uint8Array(buf.length + chunk.length);
      joined.set(buf); joined.set(chunk, buf.length);
      let out = "";
      let at = 0;
      while (joined.length - at >= 8) {
        const size = new DataView(joined.buffer, at + 4, 4).getUint32(0);
        if (joined.length - at - 8 < size) break;
        out += text.decode(joined.subarray(at + 8, at + 8 + size), { stream: true });
        at += 8 + size;
      }
      buf = joined.slice(at);
      return out;
    };
  }

  function logsPane(id) {
    const pre = h("pre", { id: "logs" });
    const search = h("input", { id: "log-search", type: "search", placeholder: "search",
      oninput: () => render() });
    const follow = h("input", { id: "log-follow", type: "checkbox", checked: true,
      onchange: () => (follow.checked ? start() : stop()) });
    const lines = [];
    let partial = "";
    let controller = null;

    function render() {
      const needle = search.value;
      const shown = needle ? lines.filter((l) => l.includes(needle)) : lines;
      pre.replaceChildren(...shown.map((l) => {
        if (!needle) return l + "\n";
        const parts = l.split(needle);
        return h("span", {}, parts.flatMap((p, i) =>
          i ? [h("mark", { class: "hit" }, needle), p] : [p]), "\n");
      }));
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    }
    function add(text) {
      const parts = (partial + text).split("\n");
      partial = parts.pop();
      lines.push(...parts.map((l) => l.replace(/\r$/, "")));
      if (lines.length > 5000) lines.splice(0, lines.length - 5000);
      render();
    }
    async function start() {
      stop();
      lines.length = 0;
      partial = "";
      controller = new AbortController();
      try {
        const resp = await call("GET",
          `/containers/${id}/logs?follow=1&stdout=1&stderr=1&tail=1000`, undefined,
          controller.signal);
        const decode = logDecoder((resp.headers.get("Content-Type") || "").includes("multiplexed"));
        const reader = resp.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          add(decode(value));
        }
      } catch (e) {
        if (e.name !== "AbortError") add(`\n[logs: ${e.message}]\n`);
      }
    }
    function stop() { if (controller) controller.abort(); controller = null; }
    start();
    cleanups.push(stop);
    return h("div", {}, h("div", { class: "logbar" },
      h("label", {}, follow, " follow"), search), pre);
  }

  // xterm.js is loaded only when a terminal is opened: the other pages stay light.
  let xtermLoading = null;
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      document.head.append(h("script", { src, onload: resolve,
        onerror: () => reject(new Error(`${src} did not load`)) }));
    });
  }

  function loadXterm() {
    const script = (src) => loadScript(src).catch(() => {
      throw new Error(`${src} is missing: build it with \`make console\``);
    });
    if (!xtermLoading) {
      document.head.append(h("link", { rel: "stylesheet", href: "/console/vendor/xterm.css" }));
      xtermLoading = script("/console/vendor/xterm.js")
        .then(() => script("/console/vendor/addon-fit.js"));
    }
    return xtermLoading;
  }

  const b64url = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  function terminalPane(id) {
    const box = h("div", { id: "terminal" });
    const note = h("p", { class: "muted" }, "A shell (sh) in the container, through exec.");
    let ws = null;
    let term = null;
    (async () => {
      try {
        await loadXterm();
        const exec = await api("POST", `/containers/${id}/exec`, {
          Cmd: ["sh"], Tty: true, AttachStdin: true, AttachStdout: true, AttachStderr: true });
        term = new window.Terminal({ fontSize: 13, convertEol: false, cursorBlink: true });
        const fit = new window.FitAddon.FitAddon();
        term.loadAddon(fit);
        term.open(box);
        fit.fit();
        window.steelcupTerminal = term; // read by the browser tests
        const scheme = location.protocol === "https:" ? "wss:" : "ws:";
        ws = new WebSocket(`${scheme}//${location.host}/exec/${exec.Id}/start/ws`,
          ["steelcup.console", "steelcup.bearer." + b64url(token())]);
        ws.binaryType = "arraybuffer";
        ws.onmessage = (ev) => term.write(new Uint8Array(ev.data));
        ws.onclose = () => term.write("\r\n[session ended]\r\n");
        ws.onopen = () => {
          const resize = () => call("POST",
            `/exec/${exec.Id}/resize?h=${term.rows}&w=${term.cols}`).catch(() => {});
          resize();
          term.onResize(resize);
        };
        const encoder = new TextEncoder();
        term.onData((data) => { if (ws.readyState === 1) ws.send(encoder.encode(data)); });
        term.focus();
      } catch (e) {
        note.textContent = "Terminal unavailable: " + e.message;
      }
    })();
    cleanups.push(() => {
      if (ws && ws.readyState === 1) ws.send(new TextEncoder().encode("exit\r"));
      if (ws) ws.close();
      if (term) term.dispose();
    });
    return h("div", {}, note, box);
  }

  async function containerPage(id) {
    const info = await get(`/containers/${id}/json`);
    const name = info.Name.replace(/^\//, "");
    const body = h("div", {});
    const tabs = {};
    const show = (which) => {
      for (const f of cleanups.splice(1)) f(); // keep the stats poll (cleanups[0])
      for (const [k, b] of Object.entries(tabs)) b.classList.toggle("on", k === which);
      body.replaceChildren(which === "logs" ? logsPane(id)
        : which === "terminal" ? terminalPane(id)
          : h("pre", { class: "json", id: "inspect" }, JSON.stringify(info, null, 2)));
    };
    for (const k of ["logs", "terminal", "inspect"]) {
      tabs[k] = h("button", { type: "button", id: "tab-" + k, onclick: () => show(k) }, k);
    }
    const stats = statsPane(id);
    show("logs");
    return [h("h1", {}, name, " ", h("span", { class: "muted mono" }, shortId(id))),
      h("p", {}, h("span", { class: "state-" + info.State.Status }, info.State.Status),
        " · ", h("span", { class: "mono" }, info.Config.Image),
        info.State.Health ? ` · health: ${info.State.Health.Status}` : ""),
      stats, h("div", { class: "tabs" }, Object.values(tabs)), body];
  }

  // ---- routing ---------------------------------------------------------------------------------
  const pages = { containers: containersPage, container: containerPage };
  // The other pages are in pages.js, loaded when one of them is first opened.
  const LATER = ["images", "networks", "volumes", "services", "crons", "funcs", "quotas",
    "account"];
  let pagesLoading = null;
  window.steelcupConsole = { h, api, get, call, token, toast, mib, shortId, pullImage, ApiError,
    pages, onLeave: (f) => cleanups.push(f) };

  async function route() {
    for (const f of cleanups.splice(0)) f();
    const [, page, arg] = (location.hash || "#/containers").split("/");
    if (!token() || page === "login") {
      view.replaceChildren(loginPage());
      return;
    }
    document.getElementById("top").hidden = false;
    for (const a of document.querySelectorAll("header nav a")) {
      a.classList.toggle("active", a.getAttribute("href") === `#/${page}`);
    }
    try {
      if (!pages[page] && LATER.includes(page)) {
        pagesLoading = pagesLoading || loadScript("/console/pages.js")
          .catch((e) => { pagesLoading = null; throw e; }); // the next visit tries again
        await pagesLoading;
      }
      const render = pages[page] || containersPage;
      const content = await render(arg && decodeURIComponent(arg));
      view.replaceChildren(...[content].flat());
    } catch (e) {
      view.replaceChildren(h("p", { class: "state-exited" }, e.message));
    }
  }

  document.getElementById("logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", route);
  // Leaving the page ends its streams and its terminal's shell (a pty's shell would wait).
  window.addEventListener("pagehide", () => { for (const f of cleanups.splice(0)) f(); });
  route();
})();
