// steelcup web console: every page but the containers and a container's, loaded the first
// time one of them is opened (docs/console.md "Weight and speed"), so the terminal's page
// carries only the core script and xterm.js. It uses the core's helpers and registers its
// pages with the core's router.
"use strict";
(function () {
  const { h, api, get, toast, mib, shortId, pullImage, ApiError, onLeave, token } =
    window.steelcupConsole;

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
    onLeave(() => clearInterval(timer));
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

  Object.assign(window.steelcupConsole.pages, { images: imagesPage, networks: networksPage,
    volumes: volumesPage, services: servicesPage, crons: cronsPage, funcs: funcsPage,
    quotas: quotasPage, account: quotasPage });
})();
