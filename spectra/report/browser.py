"""Drive a headless Chromium over the DevTools protocol, for report screenshots and browser tests.

The protocol runs over a pipe (``--remote-debugging-pipe``: the browser reads JSON commands on file
descriptor 3 and writes replies and events on descriptor 4, each message ended by a NUL byte), so
nothing but the standard library and a Chromium binary is needed: no websocket client, no node.

>>> with Chromium() as browser:                                      # doctest: +SKIP
...     page = browser.open("report.html")
...     page.evaluate("document.title")
...     page.screenshot("report.png", width=1400)
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .._files import atomic_write
from ..errors import SpectraError

__all__ = ["find_chromium", "Chromium", "Page", "BrowserError", "screenshot", "screenshots"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars")


class BrowserError(SpectraError):
    """Chromium is missing, did not start, or a DevTools command failed."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (``$SPECTRA_CHROMIUM`` first), or None."""
    env = os.environ.get("SPECTRA_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless browser process with a fresh profile; use as a context manager."""

    def __init__(self, binary: str | None = None, *, timeout: float = 30.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no chromium binary found: install chromium (apt-get install chromium) "
                               "or set SPECTRA_CHROMIUM to its path")
        self.timeout = timeout
        self._id = 0
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- process
    def __enter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="spectra-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # in the child: our pipes become its fds 3 (commands) and 4 (replies)
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [self.binary, *FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            self.send("Browser.getVersion")
        except BrowserError:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._write({"id": self._next(), "method": "Browser.close"})
                    self.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        finally:
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    # ---------------------------------------------------------------- protocol
    def _next(self) -> int:
        self._id += 1
        return self._id

    def _write(self, msg: dict[str, Any]) -> None:
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise BrowserError("chromium exited unexpectedly")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply; events seen meanwhile go to ``self.events``."""
        msg_id = self._next()
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write(msg)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Wait for an event (it may already have arrived)."""
        for i, ev in enumerate(self.events):
            if ev["method"] == method and (session is None or ev.get("sessionId") == session):
                return self.events.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            ev = self._read(deadline)
            if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                return ev
            if "method" in ev:
                self.events.append(ev)

    def open(self, target: str | Path, *, width: int = 1400, height: int = 900) -> "Page":
        """Open a file path or URL in a new tab and wait for its load event."""
        url = target if isinstance(target, str) and "://" in target else Path(target).resolve().as_uri()
        target_id = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        page.resize(width, height)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        return page


class Page:
    """One tab: evaluate JavaScript, read console errors, take screenshots."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises awaited); raises on a thrown exception."""
        res = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in res:
            raise BrowserError(f"javascript error: {res['exceptionDetails'].get('text')} "
                               f"{res['exceptionDetails'].get('exception', {}).get('description', '')}")
        return res.get("result", {}).get("value")

    def resize(self, width: int, height: int) -> None:
        self.browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                 "deviceScaleFactor": 1, "mobile": False},
                          session=self.session)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and log errors seen so far on this page."""
        out = []
        for ev in self.browser.events:
            if ev.get("sessionId") != self.session:
                continue
            p = ev.get("params", {})
            if ev["method"] == "Runtime.exceptionThrown":
                out.append(p.get("exceptionDetails", {}).get("text", "exception"))
            elif ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "log error"))
        return out

    def requests(self) -> list[str]:
        """URLs of every network request the page made (file:// and data: included)."""
        return [ev["params"]["request"]["url"] for ev in self.browser.events
                if ev.get("sessionId") == self.session and ev["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: str | Path, *, width: int = 1400, full_page: bool = True,
                   max_height: int = 16000) -> Path:
        """Write a PNG of the page (the whole page when ``full_page``)."""
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 900)
            self.resize(width, min(max(height, 200), max_height))
        data = self.browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                                 session=self.session)["data"]
        path = Path(path)
        atomic_write(path, base64.b64decode(data))
        return path


def screenshot(html: str | Path, png: str | Path, *, width: int = 1400, full_page: bool = True) -> Path:
    """Render ``html`` in headless Chromium and save a PNG screenshot (see :class:`Chromium`)."""
    return screenshots(html, [(png, width)], full_page=full_page)[0]


def screenshots(html: str | Path, shots: list[tuple[str | Path, int]], *, full_page: bool = True,
                max_height: int = 30000) -> list[Path]:
    """Full-page PNGs of ``html`` at several viewport widths (``[(path, width), ...]``), one browser."""
    out = []
    with Chromium() as browser:
        for png, width in shots:
            page = browser.open(html, width=width)
            out.append(page.screenshot(png, width=width, full_page=full_page, max_height=max_height))
    return out
