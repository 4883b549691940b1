"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no
websocket client and nothing beyond the standard library. Used by tests/test_report.py and
scripts that take the report's screenshots.

>>> with Browser() as b:
...     b.open("file:///tmp/r.html"); b.eval("document.title"); b.click(100, 200); b.screenshot("a.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


class Browser:
    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 1600, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no chromium on PATH")
        self.width, self.height, self.timeout = width, height, timeout
        self.events: list[dict] = []
        self._replies: dict[int, dict] = {}
        self._cv = threading.Condition()
        self._id = 0
        self.session: str | None = None

    # -------------------------------------------------------------- process and pipe
    def __enter__(self) -> Browser:
        self._tmp = tempfile.mkdtemp(prefix="gsweep-chromium-")
        self._log = open(os.path.join(self._tmp, "chromium.log"), "wb")
        to_r, to_w = os.pipe()      # we write commands -> chromium reads fd 3
        from_r, from_w = os.pipe()  # chromium writes fd 4 -> we read

        # above 4, so the shell's 3<& and 4>& never close what they just opened
        hi_r, hi_w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.close(to_r)
        os.close(from_w)
        to_r, from_w = hi_r, hi_w
        # fds 3 and 4 are set up by bash (dash takes one-digit fds only); no Python runs in the child
        redirect = f'exec "$0" "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-'
        args = [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--remote-debugging-pipe", f"--user-data-dir={self._tmp}",
                f"--window-size={self.width},{self.height}", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", redirect, *args], pass_fds=(to_r, from_w),
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_r)
        os.close(from_w)
        self._w = os.fdopen(to_w, "wb", buffering=0)
        self._r = os.fdopen(from_r, "rb", buffering=0)
        threading.Thread(target=self._reader, daemon=True).start()
        tid = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": tid, "flatten": True}, session=False)["sessionId"]
        for dom in ("Page", "Runtime", "Log"):
            self.send(f"{dom}.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", session=False, wait=False)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self._w, self._r, self._log):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._r.read(1 << 16)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                with self._cv:
                    self._closed = True
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                m = json.loads(msg)
                with self._cv:
                    if "id" in m:
                        self._replies[m["id"]] = m
                    else:
                        self.events.append(m)
                    self._cv.notify_all()

    def send(self, method: str, params: dict | None = None, session: bool = True, wait: bool = True) -> dict:
        self._id += 1
        i = self._id
        msg = {"id": i, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self._w.write(json.dumps(msg).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while i not in self._replies:
                if getattr(self, "_closed", False) or time.monotonic() > deadline:
                    raise TimeoutError(f"no reply to {method}: {self.log_tail()}")
                self._cv.wait(0.5)
            m = self._replies.pop(i)
        if "error" in m:
            raise RuntimeError(f"{method}: {m['error']}")
        return m.get("result", {})

    def log_tail(self) -> str:
        try:
            return Path(self._tmp, "chromium.log").read_text(errors="replace")[-600:]
        except OSError:
            return ""

    # -------------------------------------------------------------- page
    def open(self, url: str, ready: str = "document.readyState === 'complete'", timeout: float = 60.0) -> float:
        """Navigate and wait until the JS expression ``ready`` is true; returns the seconds it took."""
        t0 = time.perf_counter()
        self.send("Page.navigate", {"url": url})
        self.wait_for(ready, timeout)
        return time.perf_counter() - t0

    def wait_for(self, expr: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(f"!!({expr})"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"page never satisfied {expr!r}")

    def eval(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr!r}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r.get("result", {}).get("value")

    def click(self, x: float, y: float) -> None:
        """A real mouse click at page coordinates (scrolls there first)."""
        sy = self.eval(f"(window.scrollTo(0, Math.max(0, {y} - 300)), window.scrollY)")
        vx, vy = x, y - sy
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": vx, "y": vy})
        time.sleep(0.1)
        for t in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": t, "x": vx, "y": vy, "button": "left", "clickCount": 1})

    def screenshot(self, path: str | Path, full: bool = False) -> Path:
        params = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out
