"""Headless Chromium (Debian's ``chromium``) driven over its DevTools protocol, for the
browser test of the operator's pages: open a page, run a line of JavaScript in it (fill a
form, click a button), wait for the page a click loads, take a screenshot.

Nothing to download: the browser is the system's, the protocol is JSON over a WebSocket
(the ``websockets`` package)."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

__all__ = ["Browser", "find_chromium"]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("no chromium on PATH: install Debian's package (apt-get install "
                         "chromium); .ci/run installs it")  # fmt: skip


class Browser:
    """One headless Chromium with one page (tab), closed by ``close()``."""

    def __init__(self, profile: Path, *, width: int = 1280, height: int = 900) -> None:
        self.proc = subprocess.Popen(
            [find_chromium(), *FLAGS, f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"chromium did not open its DevTools port ({port_file})")
            time.sleep(0.05)
        port = int(port_file.read_text().split("\n")[0])
        self.stack = contextlib.ExitStack()
        # proxy=None: never through a proxy the environment names, this is 127.0.0.1.
        self.ws: ClientConnection = self.stack.enter_context(
            connect(self._page_socket(port), max_size=None, proxy=None)
        )
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def _page_socket(self, port: int) -> str:
        """The WebSocket of the browser's first page (the ``about:blank`` tab)."""
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise AssertionError("chromium has no page to drive")
            time.sleep(0.05)

    # -- the protocol ------------------------------------------------------------------------
    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == mine:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def _wait_event(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    del self.events[: i + 1]
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {method} within {timeout} s")
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                continue
            if "method" in message:
                self.events.append(message)

    # -- what a test does --------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click_and_wait(self, selector: str) -> None:
        """Click the element (a submit button) and wait for the page it loads."""
        self.events.clear()
        found = self.js(f"(() => {{ const b = document.querySelector({json.dumps(selector)}); "
                        f"if (!b) return false; b.click(); return true; }})()")  # fmt: skip
        assert found, f"no {selector} on {self.js('location.href')}"
        self._wait_event("Page.loadEventFired")

    def text(self, selector: str) -> str:
        """The element's text as written (not as CSS shows it: the admin upper-cases some)."""
        value = self.js(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''")
        return " ".join(str(value).split())

    def screenshot(self, path: Path) -> None:
        """The whole page (not only the window) as a PNG."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 2400),
                "scale": 1}  # fmt: skip
        shot = self.call("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)  # fmt: skip
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        stack = getattr(self, "stack", None)
        if stack is not None:
            stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
