"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe):
no driver binary, no websocket client. Enough for the console's browser test: navigate,
evaluate JavaScript, type, screenshot."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed: `apt-get install chromium chromium-driver` "
                "(the Makefile's apt step does this)")


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page, spoken to as CDP JSON messages, NUL-separated,
    on the child's fds 3 (commands) and 4 (answers and events)."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 760) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        argv = [chromium_binary(), "--headless=new", "--remote-debugging-pipe",
                # root in a test VM host has no user namespace sandbox for Chromium's renderers
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank"]
        self.log = profile.parent / "chromium.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.page("Page.enable")
        self.page("Runtime.enable")

    # ---- the protocol ----
    def _read_message(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError(f"no answer from Chromium in {timeout_s}s "
                                   f"(log: {self.log})")

            ready, _, _ = select.select([self._from_child], [], [], 0.5)
            if ready:
                data = os.read(self._from_child, 1 << 20)
                if not data:
                    raise BrowserError(f"Chromium exited: {self.log.read_text()[-2000:]}")
                self._buffer += data
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(self, method: str, session: str | None = None, timeout_s: float = 60,
             **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message(timeout_s)
            if answer.get("id") == ident:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self.events.append(answer)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.send(method, self.session, **params)

    # ---- what tests do ----
    def navigate(self, url: str) -> None:
        self.page("Page.navigate", url=url)
        self.wait_js("document.readyState === 'complete'", f"{url} loaded")

    def js(self, expression: str) -> Any:
        """The value of `expression` (awaited if a promise); page exceptions fail the test."""
        answer = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_js(self, expression: str, what: str, timeout_s: float = 60) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"not in {timeout_s}s: {what} ({expression})")
            time.sleep(0.2)

    def type_text(self, text: str) -> None:
        """Keys into the focused element: printable text at once, then Enter if it ends so."""
        body, enter = (text[:-1], True) if text.endswith("\r") else (text, False)
        if body:
            self.page("Input.insertText", text=body)
        if enter:
            for kind in ("keyDown", "keyUp"):
                self.page("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                          windowsVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")

    def screenshot(self, path: Path) -> Path:
        data = self.page("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout_s=10)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
