"""The web console in a real browser (headless Chromium) against a real daemon with real VMs:
log in with the console token, run busybox from the form, watch it run, read a log line it
prints after the page loaded, run `echo $((6*7))` in its terminal, stop and remove it. As a
tenant: scale a service from its page, run a cron now and see its run in the history, call a
func with a body and read its answer, and read quotas that are the API's.

Screenshots and the measured page weight / first paint are saved in the test's tmp dir;
with STEELCUP_CONSOLE_DOCS=DIR the main pages' screenshots are copied there (docs/console/)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.vm.browser import Browser
from tests.vm.support import BUSYBOX_TAR, Daemon, need_assets, start_daemon, stop_daemon

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
VENDOR = Path(__file__).resolve().parents[2] / "src/steelcup/console/static/vendor/xterm.js"
# Prints a marker line each time /tmp/go appears: the test makes it appear after the page
# has loaded, so the line cannot have been in the page's first answer.
LOOP = ("while true; do if [ -f /tmp/go ]; then echo console-marker-$(cat /tmp/go); "
        "rm /tmp/go; fi; sleep 0.2; done")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    need_assets()
    if not VENDOR.exists():
        pytest.fail(f"{VENDOR} missing: `make console` builds it (make test does)")
    port = free_port()
    d = start_daemon(tmp_path / "root", tmp_path / "run" / "steelcup.sock",
                     extra_args=("--console-listen", f"127.0.0.1:{port}"))
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        yield d, f"http://127.0.0.1:{port}"
    finally:
        stop_daemon(d)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def row_state(name: str) -> str:
    return (f"(document.querySelector('tr[data-name=\"{name}\"] .state') || "
            "{textContent: ''}).textContent")


def click(selector: str) -> str:
    return f"(document.querySelector('{selector}').click(), true)"


def terminal_text() -> str:
    return ("(() => { const t = window.steelcupTerminal; if (!t) return ''; "
            "const b = t.buffer.active; const out = []; "
            "for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true)); "
            "return out.join('\\n'); })()")


def test_console_runs_watches_and_removes_a_container(
        console: tuple[Daemon, str], browser: Browser, tmp_path: Path) -> None:
    daemon, url = console
    token = (daemon.root / "console-token").read_text().strip()
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        browser.js("document.getElementById('toast').hidden = true")
        browser.screenshot(shots / f"{name}.png")

    # The login page, then the first paint and the bytes the pages weigh.
    browser.navigate(url + "/")
    browser.wait_js("!!document.getElementById('login-token')", "the login form")
    shot("login")
    paint = browser.js("performance.getEntriesByType('paint').map(e => [e.name, e.startTime])")
    first_paint_ms = dict(paint).get("first-contentful-paint") or dict(paint).get("first-paint")
    assert first_paint_ms is not None and first_paint_ms < 1000, paint

    browser.js("document.getElementById('login-token').value = " + json.dumps(token))
    browser.js(click("#login-submit"))
    browser.wait_js("!!document.getElementById('run-form')", "the containers page")

    # Run busybox (the tests' steelcup/busybox image) from the form; it is listed as running.
    browser.js("document.getElementById('run-image').value = 'steelcup/busybox'")
    browser.js("document.getElementById('run-cmd').value = " + json.dumps(f"sh -c '{LOOP}'"))
    browser.js("document.getElementById('run-name').value = 'web1'")
    browser.js(click("#run-submit"))
    browser.wait_js(row_state("web1") + " === 'running'", "web1 listed as running",
                    timeout_s=300)
    shot("containers")

    # Its page: charts fill from /stats, the log pane streams a line printed after loading.
    browser.js(click('tr[data-name="web1"] a'))
    browser.wait_js("!!document.getElementById('logs') && !!document.getElementById('cpu-chart')",
                    "the container page")
    assert "console-marker" not in browser.js("document.getElementById('logs').textContent")
    # The charts poll /stats every second: some seconds of each.
    browser.wait_js("['cpu-chart', 'mem-chart'].every(id => "
                    "+document.getElementById(id).dataset.points >= 8)", "8 points per chart")
    daemon.cli("exec", "web1", "sh", "-c", "echo 4711 > /tmp/go", check=True)
    browser.wait_js("document.getElementById('logs').textContent"
                    ".includes('console-marker-4711')", "the marker line in the log pane")
    shot("container")
    # The search box keeps the matching lines, the match highlighted.
    search = ("(s => { s.value = %s; s.dispatchEvent(new Event('input')); return true; })"
              "(document.getElementById('log-search'))")
    browser.js(search % "'marker-47'")
    assert browser.js("document.querySelector('#logs mark.hit').textContent") == "marker-47"
    browser.js(search % "'no-such-line'")
    assert browser.js("document.getElementById('logs').textContent") == ""

    # The terminal: sh through exec with a pty, over the websocket.
    browser.js(click("#tab-terminal"))
    browser.wait_js(terminal_text() + ".trim().length > 0", "a shell prompt", timeout_s=120)
    browser.js("window.steelcupTerminal.focus(), true")
    browser.type_text("echo $((6*7))\r")
    browser.wait_js(terminal_text() + ".split('\\n').some(l => l.trim() === '42')",
                    "42 on a line of its own in the terminal")
    shot("terminal")

    # Images, then stop and remove web1 from the list.
    browser.js("location.hash = '#/images', true")
    browser.wait_js("document.querySelector('main table') && "
                    "document.querySelector('main table').textContent.includes('steelcup/busybox')",
                    "steelcup/busybox in the images list")
    shot("images")
    browser.js("location.hash = '#/containers', true")
    browser.wait_js(row_state("web1") + " === 'running'", "web1 listed again")
    browser.js(click('tr[data-name="web1"] button[data-action="stop"]'))
    browser.wait_js(row_state("web1") + " === 'exited'", "web1 stopped", timeout_s=120)
    browser.js(click('tr[data-name="web1"] button[data-action="remove"]'))
    browser.wait_js("!document.querySelector('tr[data-name=\"web1\"]')", "web1 removed")
    assert daemon.out("ps", "-a", "-q", "--filter", "name=web1").strip() == ""

    # What the pages weigh: every script and style sheet the browser fetched.
    resources = browser.js(
        "performance.getEntriesByType('resource').map(e => [e.name, e.encodedBodySize, "
        "e.decodedBodySize])")
    weight = {"first_paint_ms": first_paint_ms,
              "resources": [r for r in resources if r[0].endswith((".js", ".css"))]}
    js_bytes = sum(r[2] for r in weight["resources"] if r[0].endswith(".js"))
    assert js_bytes < 350 * 1024, weight  # every page opened, the terminal's included
    # The terminal's page: the core script and xterm.js, not the other pages' pages.js.
    terminal_js = sum(r[2] for r in weight["resources"]
                      if r[0].endswith(".js") and not r[0].endswith("/pages.js"))
    assert terminal_js < 310 * 1024, weight
    assert any(r[0].endswith("/console/pages.js") for r in weight["resources"]), weight
    (tmp_path / "page-weight.json").write_text(json.dumps(weight, indent=1))

    docs = os.environ.get("STEELCUP_CONSOLE_DOCS")
    if docs:
        for name in ("login", "containers", "container", "terminal", "images"):
            shutil.copy(shots / f"{name}.png", Path(docs) / f"{name}.png")


def shoot(browser: Browser, shots: Path, name: str) -> None:
    browser.js("document.getElementById('toast').hidden = true")
    browser.screenshot(shots / f"{name}.png")


def log_in(browser: Browser, url: str, token: str) -> None:
    browser.navigate(url + "/")
    browser.wait_js("!!document.getElementById('login-token')", "the login form")
    browser.js("document.getElementById('login-token').value = " + json.dumps(token))
    browser.js(click("#login-submit"))
    browser.wait_js("!!document.getElementById('run-form')", "the containers page")


def go(browser: Browser, page: str, ready_js: str, what: str, timeout_s: float = 60) -> None:
    browser.js(f"location.hash = '#/{page}', true")
    browser.wait_js(ready_js, what, timeout_s=timeout_s)


def page_quotas(browser: Browser) -> dict[str, list[str]]:
    return dict(browser.js(
        "[...document.querySelectorAll('#quotas tr[data-quota]')].map(r => [r.dataset.quota, "
        "[r.querySelector('.used').textContent, r.querySelector('.limit').textContent]])"))


def api_quotas(web: httpx.Client, headers: dict[str, str] | None = None, **params: str
               ) -> dict[str, list[str]]:
    answer = web.get("/steelcup/quotas", params=params, headers=headers)
    answer.raise_for_status()
    return {q["Name"]: ["–" if q["Used"] is None else str(q["Used"]), str(q["Limit"])]
            for q in answer.json()["Quotas"]}


def test_console_services_crons_funcs_and_quotas_as_a_tenant(
        tmp_path: Path, browser: Browser) -> None:
    """A tenant logged in with its token: its service scaled from the page, its cron run now
    and the run in the history, its func called with a body, its quotas as the API says."""
    need_assets()
    port, tls_port = free_port(), free_port()
    d = start_daemon(tmp_path / "root", tmp_path / "run" / "s.sock", extra_args=(
        "--console-listen", f"127.0.0.1:{port}", "--multi-tenant", "--allow-tcg",
        "--tls-listen", f"127.0.0.1:{tls_port}"))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        token = tenant_token(d, "alice")
        with operator_api(d) as op:
            op.post("/steelcup/tenants/alice/update",
                    json={"Quotas": ["containers=6", "services=2", "crons=3", "funcs=2"]}
                    ).raise_for_status()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                          headers={"Authorization": f"Bearer {token}"}) as web:
            web.post("/images/load", content=BUSYBOX_TAR.read_bytes()).raise_for_status()
            service = web.post("/services/create", json={
                "Name": "web", "TaskTemplate": {"ContainerSpec": {
                    "Image": "steelcup/busybox", "Args": ["sleep", "86400"]}},
                "Mode": {"Replicated": {"Replicas": 1}}})
            assert service.status_code == 201, service.text
            service_id = service.json()["ID"]
            cron = web.post("/crons", json={"Name": "tick", "Schedule": "@yearly", "Container": {
                "Image": "steelcup/busybox", "Cmd": ["echo", "tick-ran"]}})
            assert cron.status_code == 201, cron.text
            func = web.post("/funcs", json={"Name": "upper", "Auth": "token", "Spec": {
                "Image": "steelcup/busybox", "Cmd": ["tr", "a-z", "A-Z"]}})
            assert func.status_code == 201, func.text

            log_in(browser, f"http://127.0.0.1:{port}", token)

            # Services: web runs 1 of 1; scaled to 2 from the page, the API says 2 and the
            # page shows 2 running.
            running = "document.querySelector('[data-service-name=\"web\"]') && " \
                "document.querySelector('main .running').dataset"
            go(browser, "services", f"{running} && {running}.running === '1'",
               "web with 1 task running", timeout_s=300)
            browser.js("(b => { b.value = '2'; return true; })"
                       "(document.querySelector('input[data-service=\"web\"]'))")
            browser.js(click('button[data-action="scale"]'))
            deadline = time.monotonic() + 60
            while web.get(f"/services/{service_id}").json()["Spec"]["Mode"]["Replicated"][
                    "Replicas"] != 2:
                assert time.monotonic() < deadline, "the scale never reached the API"
                time.sleep(0.5)
            browser.wait_js(f"{running}.running === '2' && {running}.desired === '2'",
                            "web with 2 of 2 running", timeout_s=300)
            shoot(browser, shots, "services")

            # Crons: run now; the run is in the history and succeeds.
            go(browser, "crons", "!!document.querySelector('[data-cron=\"tick\"]')",
               "the cron tick listed")
            browser.js(click('[data-cron-actions="tick"] button[data-action="run now"]'))
            browser.wait_js("document.querySelector('#cron-history .run-status') && "
                            "document.querySelector('#cron-history .run-status').textContent "
                            "=== 'succeeded'", "a succeeded run in tick's history",
                            timeout_s=300)
            history = web.get("/crons/tick/history").json()
            assert [(r["Status"], r["Manual"]) for r in history] == [("succeeded", True)]
            assert "tick-ran" in "\n".join(history[0]["Logs"])
            assert history[0]["Id"][:12] in browser.js(
                "document.getElementById('cron-history').textContent")
            shoot(browser, shots, "crons")

            # Funcs: a call with a body; the answer is shown.
            go(browser, "funcs", "(document.getElementById('func-name') || {}).value === 'upper'",
               "the func upper to call")
            browser.js("document.getElementById('func-body').value = 'hello console'")
            browser.js(click("#func-call"))
            browser.wait_js("!!document.getElementById('func-output')", "the call's answer",
                            timeout_s=300)
            assert browser.js("document.getElementById('func-output').textContent") == \
                "HELLO CONSOLE"
            assert "exit code 0" in browser.js(
                "document.getElementById('func-status').textContent")
            shoot(browser, shots, "funcs")

            # Quotas: the page's figures are the API's (the page redraws every 5 s; the
            # containers' count moves while the run and call containers go).
            go(browser, "quotas", "document.querySelectorAll('#quotas tr[data-quota]').length",
               "the quota table")
            deadline = time.monotonic() + 60
            while (shown := page_quotas(browser)) != (wanted := api_quotas(web)):
                assert time.monotonic() < deadline, (shown, wanted)
                time.sleep(1)
            assert shown["services"] == ["1", "2"] and shown["crons"] == ["1", "3"]
            assert shown["funcs"] == ["1", "2"] and shown["containers"][1] == "6"
            assert browser.js("!!document.getElementById('usage-total')")
            shoot(browser, shots, "quotas")

            # remove the service from its page
            go(browser, "services", "!!document.querySelector('[data-service-name=\"web\"]')",
               "web listed")
            browser.js(click('button[data-action="remove"]'))
            browser.wait_js("!document.querySelector('[data-service-name=\"web\"]')",
                            "web gone from the page")
            assert web.get("/services").json() == []
            web.delete("/crons/tick").raise_for_status()
            web.delete("/funcs/upper").raise_for_status()

            # The operator (the console token) picks the tenant whose quotas it reads.
            browser.js("sessionStorage.clear(), location.hash = '#/login', true")
            console_token = (d.root / "console-token").read_text().strip()
            log_in(browser, f"http://127.0.0.1:{port}", console_token)
            go(browser, "quotas", "(document.getElementById('quota-tenant') || {}).value "
               "=== 'alice' && document.querySelectorAll('#quotas tr[data-quota]').length",
               "alice's quotas in the operator's view")
            operator = {"Authorization": f"Bearer {console_token}"}
            deadline = time.monotonic() + 60
            while (shown := page_quotas(browser)) != (wanted := api_quotas(
                    web, tenant="alice", headers=operator)):
                assert time.monotonic() < deadline, (shown, wanted)
                time.sleep(1)
            assert shown["services"] == ["0", "2"] and shown["funcs"] == ["0", "2"]
    finally:
        stop_daemon(d)
    docs = os.environ.get("STEELCUP_CONSOLE_DOCS")
    if docs:
        for name in ("services", "crons", "funcs", "quotas"):
            shutil.copy(shots / f"{name}.png", Path(docs) / f"{name}.png")


def operator_api(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url="http://steelcup", timeout=60,
                        transport=httpx.HTTPTransport(uds=str(daemon.socket)))


def tenant_token(daemon: Daemon, name: str) -> str:
    with operator_api(daemon) as api:
        api.post("/steelcup/tenants", json={"Name": name}).raise_for_status()
        key = api.post(f"/steelcup/tenants/{name}/keys", json={})
        key.raise_for_status()
        return str(key.json()["Token"])


def test_single_user_console_refuses_tenant_keys(console: tuple[Daemon, str]) -> None:
    """Without --multi-tenant only the console token logs in (tenant keys are honoured only
    where the daemon checked every route is scoped)."""
    daemon, url = console
    alice = tenant_token(daemon, "alice")
    with httpx.Client(base_url=url, timeout=60) as web:
        assert web.get("/info", headers={"Authorization": f"Bearer {alice}"}
                       ).status_code == 401
        assert web.get("/", headers={"Authorization": f"Bearer {alice}"}).status_code == 200


def test_multi_tenant_console_scopes_each_token(tmp_path: Path) -> None:
    """With --multi-tenant the console answers a tenant's token as the TLS tenant listener
    does: its own objects only, no operator route; the console token is the operator."""
    need_assets()
    port, tls_port = free_port(), free_port()
    d = start_daemon(tmp_path / "root", tmp_path / "run" / "s.sock", extra_args=(
        "--console-listen", f"127.0.0.1:{port}", "--multi-tenant", "--allow-tcg",
        "--tls-listen", f"127.0.0.1:{tls_port}"))
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        with operator_api(d) as api:
            made = api.post("/containers/create", json={"Image": "steelcup/busybox",
                                                        "Cmd": ["true"]})
            made.raise_for_status()
        theirs = made.json()["Id"]
        alice = {"Authorization": f"Bearer {tenant_token(d, 'alice')}"}
        console_token = (d.root / "console-token").read_text().strip()
        operator = {"Authorization": f"Bearer {console_token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as web:
            assert web.get("/containers/json?all=1", headers=alice).json() == []
            assert web.get(f"/containers/{theirs}/json", headers=alice).status_code == 404
            assert web.get("/steelcup/tenants", headers=alice).status_code == 403
            assert web.get("/info", headers=alice).json()["Containers"] == 0
            listed = web.get("/containers/json?all=1", headers=operator).json()
            assert [c["Id"] for c in listed] == [theirs]
            assert web.get("/info", headers={"Authorization": "Bearer nope"}
                           ).status_code == 401
            assert web.get("/info", headers={**alice, "Origin": "http://evil.example"}
                           ).status_code == 403
            with operator_api(d) as api:
                api.delete(f"/containers/{theirs}").raise_for_status()
    finally:
        stop_daemon(d)
