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
  function loadXterm() {
    const script = (src) => new Promise((resolve, reject) => {
      document.head.append(h("script", { src, onload: resolve,
        onerror: () => reject(new Error(`${src} is missing: build it with \`make console\``)) }));
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

  // ---- images, networks, volumes --------------------------------------------------------
  function table(headers, rows, empty) {
    return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) =>
        c instanceof Node ? h("td", {}, c) : h("td", { class: "mono" }, c ?? ""))))
        : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty))));
  }

  const when = (seconds) => seconds ? new Date(seconds * 1000).toLocaleString() : "";

  async function imagesPage() {
    const holder = h("div", {});
    const bar = h("progress", { id: "pull-progress", max: 1, value: 0, hidden: true });
    const status = h("span", { id: "pull-status", class: "muted" });
    async function refresh() {
      const list = await get("/images/json");
      holder.replaceChildren(table(["Tags", "Id", "Size", "Created", ""], list.map((i) => [
        (i.RepoTags || []).join(", ") || "<none>", shortId(i.Id), mib(i.Size), when(i.Created),
        h("button", { type: "button", class: "danger", onclick: async () => {
          try { await api("DELETE", `/images/${encodeURIComponent(i.Id)}`); await refresh(); }
          catch (e) { toast("remove failed: " + e.message, true); }
        } }, "remove")]), "No images."));
    }
    const form = h("form", { class: "inline", onsubmit: async (ev) => {
      ev.preventDefault();
      const layers = {};
      bar.hidden = false;
      status.textContent = "starting…";
      try {
        await pullImage(form.ref.value.trim(), (msg) => {
          if (msg.id && msg.progressDetail && msg.progressDetail.total) layers[msg.id] = msg.progressDetail;
          const all = Object.values(layers);
          const total = all.reduce((a, d) => a + d.total, 0);
          if (total) { bar.max = total; bar.value = all.reduce((a, d) => a + (d.current || 0), 0); }
          status.textContent = [msg.id, msg.status, msg.progress].filter(Boolean).join(" ");
        });
        toast("pulled " + form.ref.value);
        await refresh();
      } catch (e) {
        status.textContent = "pull failed: " + e.message;
      } finally {
        bar.hidden = true;
      }
    } }, h("label", {}, "Image", h("input", { name: "ref", id: "pull-ref", required: true,
      placeholder: "busybox:latest" })),
    h("button", { class: "primary", type: "submit" }, "Pull"), bar, status);
    await refresh();
    return [h("h1", {}, "Images"), form, holder];
  }

  async function networksPage() {
    const list = await get("/networks");
    return [h("h1", {}, "Networks"), table(["Name", "Id", "Driver", "Subnet", "Containers"],
      list.map((n) => [n.Name, shortId(n.Id), n.Driver,
        ((n.IPAM && n.IPAM.Config) || []).map((c) => c.Subnet).join(", "),
        Object.keys(n.Containers || {}).length]), "No networks.")];
  }

  async function volumesPage() {
    const list = (await get("/volumes")).Volumes || [];
    return [h("h1", {}, "Volumes"), table(["Name", "Driver", "Created"],
      list.map((v) => [v.Name, v.Driver, v.CreatedAt]), "No volumes.")];
  }

  // A page whose content is redrawn by `refresh` now and every `period_ms` until it is left.
  async function polled(refresh, period_ms = 3000) {
    await refresh();
    const timer = setInterval(() => refresh().catch(() => {}), period_ms);
    cleanups.push(() => clearInterval(timer));
  }

  // A button that runs `action`, says what happened in a toast and then redraws.
  function actionButton(label, action, done, cls) {
    return h("button", { type: "button", class: cls, "data-action": label, onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        const said = await action();
        toast(said || label);
      } catch (e) {
        toast(`${label} failed: ${e.message}`, true);
      } finally {
        ev.target.disabled = false;
      }
      await done();
    } }, label);
  }

  // ---- services -----------------------------------------------------------------------------------
  const replicasOf = (s) => (s.Spec.Mode || {}).Replicated ? s.Spec.Mode.Replicated.Replicas : null;
  const imageOf = (s) => ((s.Spec.TaskTemplate || {}).ContainerSpec || {}).Image || "";

  // docker service scale: the current spec with new replicas, at the version it was read at.
  async function scaleService(id, replicas) {
    const service = await get(`/services/${encodeURIComponent(id)}`);
    const spec = service.Spec;
    if (!(spec.Mode || {}).Replicated) throw new Error("a global service has no replica count");
    spec.Mode.Replicated.Replicas = replicas;
    await api("POST", `/services/${encodeURIComponent(id)}/update?version=${service.Version.Index}`,
      spec);
  }

  async function servicesPage() {
    const holder = h("div", {});
    async function refresh() {
      const [services, tasks] = await Promise.all([get("/services"), get("/tasks")]);
      const running = {};
      for (const t of tasks) {
        if (t.DesiredState === "running" && t.Status && t.Status.State === "running") {
          running[t.ServiceID] = (running[t.ServiceID] || 0) + 1;
        }
      }
      holder.replaceChildren(table(["Name", "Image", "Replicas", "Ports", "Updated", ""],
        services.map((s) => {
          const name = s.Spec.Name;
          const want = replicasOf(s);
          const count = h("input", { type: "number", min: 0, max: 100, size: 3,
            value: want ?? "", "data-service": name, class: "replicas", disabled: want === null });
          const ports = ((s.Endpoint || {}).Ports || []).map((p) =>
            `${p.PublishedPort}->${p.TargetPort}/${p.Protocol}`).join(", ");
          const row = [
            h("span", { "data-service-name": name }, name, h("br"),
              h("span", { class: "muted mono" }, shortId(s.ID))),
            imageOf(s).replace(/@sha256:.*/, ""),
            h("span", { class: "running", "data-running": running[s.ID] || 0,
              "data-desired": want ?? "global" },
            `${running[s.ID] || 0} / ${want ?? "global"}`),
            ports, when(Date.parse(s.UpdatedAt) / 1000),
            h("span", { class: "actions" }, count,
              actionButton("scale", async () => {
                await scaleService(s.ID, Number(count.value));
                return `${name} scaled to ${count.value}`;
              }, refresh),
              actionButton("remove", async () => {
                await api("DELETE", `/services/${encodeURIComponent(s.ID)}`);
                return `${name} removed`;
              }, refresh, "danger"))];
          return row;
        }), "No services (docker service create)."));
    }
    // Redraws would reset a replica box being typed in: only while none has focus.
    await polled(() => (document.activeElement && document.activeElement.classList
      .contains("replicas") ? Promise.resolve() : refresh()));
    return [h("h1", {}, "Services"), holder];
  }

  // ---- crons --------------------------------------------------------------------------------------
  async function cronsPage() {
    const holder = h("div", {});
    const history = h("div", { id: "cron-history" });
    let shown = null; // the cron whose history is open
    async function showHistory(name) {
      shown = name;
      const runs = await get(`/crons/${encodeURIComponent(name)}/history?tail=20`);
      history.replaceChildren(h("h2", {}, `History of ${name}`), table(["Run", "Status",
        "Manual", "Started", "Finished", "Exit", "Error / last log lines"],
      runs.slice().reverse().map((r) => [shortId(r.Id), h("span", {
        class: "run-status run-" + r.Status }, r.Status), r.Manual ? "yes" : "", r.Started, r.Finished, r.ExitCode ?? "",
      r.Error || (r.Logs || []).slice(-3).join("\n")]), "No runs yet."));
    }
    async function refresh() {
      const list = await get("/crons");
      holder.replaceChildren(table(["Name", "Schedule", "Next run", "Last run", "Suspended", ""],
        list.map((c) => {
          const at = `/crons/${encodeURIComponent(c.Name)}`;
          return [h("span", { "data-cron": c.Name }, c.Name), `${c.Schedule} (${c.Timezone || "UTC"})`,
            c.NextRun || "",
            c.LastRun ? `${c.LastRun.Status} ${c.LastRun.Finished || c.LastRun.Started || ""}` : "",
            c.Suspended ? "yes" : "",
            h("span", { class: "actions", "data-cron-actions": c.Name },
              actionButton("run now", async () => {
                const run = await api("POST", `${at}/run`);
                return `${c.Name}: run ${shortId(run.Id)} started`;
              }, async () => { await refresh(); await showHistory(c.Name); }),
              c.Suspended
                ? actionButton("resume", () => api("POST", `${at}/resume`), refresh)
                : actionButton("suspend", () => api("POST", `${at}/suspend`), refresh),
              h("button", { type: "button", "data-action": "history",
                onclick: () => showHistory(c.Name).catch((e) => toast(e.message, true)) },
              "history"))];
        }), "No crons (steelcup cron create)."));
      if (shown) await showHistory(shown).catch(() => { shown = null; });
    }
    await polled(refresh);
    return [h("h1", {}, "Crons"), holder, history];
  }

  // ---- funcs --------------------------------------------------------------------------------------
  // A call through the API with the body as given (not JSON): the func's stdin.
  async function callFunc(name, input) {
    const resp = await fetch(`/funcs/${encodeURIComponent(name)}/call`, { method: "POST",
      headers: { Authorization: "Bearer " + token(), "Content-Type": "application/octet-stream" },
      body: input });
    const text = await resp.text();
    const head = (k) => resp.headers.get(k) || "";
    if (resp.ok) {
      return { ok: head("Steelcup-Exit-Code") === "0", output: text, callId: head("Steelcup-Call-Id"),
        status: head("Steelcup-Call-Status"), exit: head("Steelcup-Exit-Code") };
    }
    let err = {};
    try { err = JSON.parse(text); } catch (e) { err = { message: text }; }
    return { ok: false, output: [err.message || resp.statusText, err.Stderr].filter(Boolean)
      .join("\n"), callId: err.CallId || "", status: err.Status || String(resp.status),
    exit: err.ExitCode ?? "" };
  }

  async function funcsPage() {
    const holder = h("div", {});
    const pick = h("select", { name: "func", id: "func-name", required: true });
    const input = h("textarea", { name: "body", id: "func-body", rows: 3, cols: 50,
      placeholder: "the call's body (its stdin)" });
    const result = h("div", { id: "func-result" });
    const form = h("form", { class: "inline", id: "func-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      result.replaceChildren(h("p", { class: "muted" }, `calling ${pick.value}…`));
      try {
        const r = await callFunc(pick.value, input.value);
        result.replaceChildren(h("p", { id: "func-status", class: r.ok ? "state-running"
          : "state-exited" }, `${r.status}${r.exit !== "" ? `, exit code ${r.exit}` : ""}`,
        r.callId ? h("span", { class: "muted mono" }, ` · call ${r.callId}`) : ""),
        h("pre", { id: "func-output", class: "json" }, r.output));
      } catch (e) {
        result.replaceChildren(h("p", { class: "state-exited" }, "call failed: " + e.message));
      } finally {
        button.disabled = false;
      }
      await refresh();
    } }, h("label", {}, "Func", pick), h("label", {}, "Body", input),
    h("button", { class: "primary", id: "func-call", type: "submit" }, "Call"));
    async function refresh() {
      const list = await get("/funcs");
      const chosen = pick.value;
      pick.replaceChildren(...list.map((f) => h("option", { value: f.Name,
        selected: f.Name === chosen }, f.Name)));
      holder.replaceChildren(table(["Name", "Image", "Auth", "Running", "Queued",
        "Concurrency", "Timeout"], list.map((f) => [f.Name, f.Image, f.Auth, f.Running,
        f.Queued, f.Concurrency, f.Timeout + " s"]), "No funcs (steelcup func create)."));
    }
    await refresh();
    return [h("h1", {}, "Funcs"), holder, h("h2", {}, "Call a func"), form, result];
  }

  // ---- quotas and usage ---------------------------------------------------------------------------
  const QUOTA_UNITS = { memory_mib: "MiB", volume_gib: "GiB", cpus: "vCPUs" };
  // The operator's words for them (`tenant update --quota memory=...`).
  const QUOTA_WORDS = { memory_mib: "memory", volume_gib: "volume-size", func_calls: "func-calls" };

  function quotaTables(report) {
    const rows = report.Quotas.map((q) => {
      const unit = QUOTA_UNITS[q.Name] || "";
      const share = q.Used === null || !q.Limit ? 0 : Math.min(1, q.Used / q.Limit);
      return h("tr", { "data-quota": q.Name },
        h("td", {}, QUOTA_WORDS[q.Name] || q.Name),
        h("td", { class: "mono used" }, q.Used === null ? "–" : `${q.Used}`),
        h("td", { class: "mono limit" }, `${q.Limit}`),
        h("td", { class: "muted" }, unit),
        h("td", {}, h("progress", { max: 1, value: share,
          class: share >= 1 ? "full" : "" })));
    });
    const out = [h("h2", {}, `Quotas of ${report.Tenant}`,
      h("span", { class: "muted" }, ` · default size ${report.SizeDefault}`)),
    h("table", { id: "quotas" }, h("thead", {}, h("tr", {}, ["Quota", "Used", "Limit", "Unit",
      ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows))];
    const usage = report.Usage;
    if (usage) {
      out.push(h("h2", {}, "Container-seconds", h("span", { class: "muted" },
        usage.Since ? ` since ${usage.Since}` : " since the tenant began")),
      table(["Size", "vCPUs", "Memory", "Containers", "Seconds"], usage.Lines.map((l) =>
        [l.Size || "(no class)", l.Cpus, l.MemoryMiB + " MiB", l.Containers, l.Seconds]),
      "Nothing has run yet."),
      h("p", { id: "usage-total" }, "Total: ", h("strong", {}, `${Math.round(usage.TotalSeconds)}`),
        " container-seconds"));
    }
    return out;
  }

  async function quotasPage(tenant) {
    const info = await get("/info");
    const rows = [["Containers", info.Containers], ["Running", info.ContainersRunning],
      ["Stopped", info.ContainersStopped], ["Images", info.Images],
      ["Defaults", (info.Labels || []).join(" ")], ["Server", info.ServerVersion],
      ["Isolation", info.Isolation], ...(info.Warnings || []).map((w) => ["Warning", w])];
    const infoTable = [h("h2", {}, "What GET /info says"), h("table", { class: "kv", id: "account" },
      h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, String(v ?? ""))))))];
    const out = [h("h1", {}, "Quotas and usage")];
    const holder = h("div", { id: "quota-report" });
    // A tenant reads its own; the operator (403 on the tenants list for a tenant) picks one.
    let tenants = null;
    try {
      tenants = await get("/steelcup/tenants");
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 403)) throw e;
    }
    if (tenants !== null && !tenants.length) {
      out.push(h("p", { class: "muted" }, "The operator's own objects have no quotas, and " +
        "there are no tenants yet (steelcup tenant create)."), ...infoTable);
      return out;
    }
    const chosen = tenants === null ? null : tenant || tenants[0].Name;
    if (tenants !== null) {
      out.push(h("p", {}, "Tenant (operator's view): ", h("select", { id: "quota-tenant",
        onchange: (ev) => { location.hash = `#/quotas/${encodeURIComponent(ev.target.value)}`; } },
      tenants.map((t) => h("option", { value: t.Name, selected: t.Name === chosen }, t.Name)))));
    }
    const path = "/steelcup/quotas" + (chosen ? "?" + new URLSearchParams({ tenant: chosen }) : "");
    await polled(async () => { holder.replaceChildren(...quotaTables(await get(path))); }, 5000);
    out.push(holder, ...infoTable);
    return out;
  }

  // ---- routing ---------------------------------------------------------------------------------
  const pages = { containers: containersPage, container: containerPage, images: imagesPage,
    networks: networksPage, volumes: volumesPage, services: servicesPage, crons: cronsPage,
    funcs: funcsPage, quotas: quotasPage, account: quotasPage };

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
    const render = pages[page] || containersPage;
    try {
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
