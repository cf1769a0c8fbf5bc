"""A minimal Chrome DevTools Protocol client: starts a real headless Chromium and drives one
page of it over the DevTools WebSocket (the test extra's ``websockets``). Enough for the
dashboard's browser tests: navigate, evaluate JavaScript, wait for a condition, click, and take
a screenshot.

The browser is ``$PYREDISLUA_CHROMIUM`` or the first of chromium, chromium-browser,
google-chrome on PATH (Debian's package: ``apt-get install chromium``); :func:`find_chromium`
says why there is none so tests can skip with that reason.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> tuple[str | None, str]:
    """(path, "") of a Chromium, or (None, why not)."""
    named = os.environ.get("PYREDISLUA_CHROMIUM")
    if named:
        if os.access(named, os.X_OK):
            return named, ""
        return None, f"PYREDISLUA_CHROMIUM={named} is not an executable"
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path, ""
    return None, ("no Chromium on PATH (looked for " + ", ".join(NAMES) + "; on Debian: "
                  "apt-get install chromium, or set PYREDISLUA_CHROMIUM)")


class CDPError(Exception):
    pass


class Browser:
    """One headless Chromium process with one page (a tab) attached."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 900,
                 timeout: float = 30.0) -> None:
        from websockets.sync.client import connect

        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="prl-chromium-")
        self._proc = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--mute-audio",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = self._devtools_url()
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(url, max_size=64 * 1024 * 1024, open_timeout=timeout))
        self._ids = itertools.count(1)
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._send("Target.attachToTarget",
                                   {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _devtools_url(self) -> str:
        """The browser's WebSocket URL, from the line Chromium prints on stderr."""
        assert self._proc.stderr is not None
        found: list[str] = []
        lines: list[str] = []

        def read() -> None:
            assert self._proc.stderr is not None
            for line in self._proc.stderr:
                lines.append(line)
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m:
                    found.append(m.group(1))
                    break

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(self.timeout)
        if not found:
            self.close()
            raise CDPError("Chromium did not start: " + "".join(lines[-20:]).strip())
        # keep draining stderr so the browser never blocks on a full pipe
        threading.Thread(target=lambda: [None for _ in self._proc.stderr or ()],
                         daemon=True).start()
        return found[0]

    def _send(self, method: str, params: dict[str, Any] | None = None,
              session: str | None = None) -> Any:
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"no reply to {method} within {self.timeout} s")
            reply = json.loads(self._ws.recv(timeout=left))
            if reply.get("id") != ident:
                continue  # an event
            if "error" in reply:
                raise CDPError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A command to the page."""
        return self._send(method, params, self._session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when a promise)."""
        got = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in got:
            raise CDPError(f"{expression!r} threw: {got['exceptionDetails']}")
        return got["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> None:
        """Evaluate ``expression`` until it is truthy in JavaScript (a navigation may be in
        progress: its errors count as not yet)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(f"!!({expression})")
            except CDPError as error:
                last = error
            else:
                if last is True:
                    return
            time.sleep(0.05)
        raise CDPError(f"{expression!r} still not true after {timeout or self.timeout} s "
                       f"(last: {last!r})")

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until it has loaded."""
        self.send("Page.navigate", {"url": url})
        self.wait_for(f"location.href === {json.dumps(url)} && "
                      "document.readyState === 'complete'")

    def click_and_wait(self, selector: str, until: str) -> None:
        """Click the first element matching ``selector`` (a form submit navigates), then wait
        for ``until`` to be truthy on the next page."""
        self.evaluate("window.__prl_before = true")
        clicked = self.evaluate(f"(() => {{ const el = document.querySelector("
                                f"{json.dumps(selector)}); if (!el) return false; "
                                f"el.click(); return true; }})()")
        if not clicked:
            raise CDPError(f"nothing matches {selector!r}")
        self.wait_for(f"!window.__prl_before && document.readyState === 'complete' "
                             f"&& ({until})")

    def text(self, selector: str = "body") -> str:
        value = self.evaluate(f"(document.querySelector({json.dumps(selector)}) || "
                              "{innerText: ''}).innerText")
        return str(value)

    def count(self, selector: str) -> int:
        return int(self.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length"))

    def screenshot(self, path: str, *, width: int = 1280) -> None:
        """A PNG of the whole page (as tall as its content)."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        shot = self.send("Page.captureScreenshot", {"format": "png",
                                                    "captureBeyondViewport": True})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):
                self._send("Browser.close")
            self._stack.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
