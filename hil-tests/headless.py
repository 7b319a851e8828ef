"""Headless Chromium for the status page tests: the binary, its flags, and a page driven over
the DevTools pipe (fds 3/4, no network port) to evaluate scripts in it and take screenshots.

Chromium comes from Debian (hil-tests/setup installs it); a test fails, with the fix, when it is
missing: the status page is part of what the suite checks.
"""
import base64
import json
import os
import select
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium missing: run hil-tests/setup")


class DevToolsPage:
    """`url` open in headless Chromium at `width`×`height`; `evaluate` runs an expression in
    the page and returns its value, `screenshot` returns PNG bytes. Use as a context manager."""

    def __init__(self, url: str, width: int = 1280, height: int = 900):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="meterd-chromium-")
        args = [chromium(), *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
                f"--window-size={width},{height}", url]
        self._proc = subprocess.Popen(
            ["bash", "-c", f"exec 3<&{to_chrome_r} 4>&{from_chrome_w}; exec {' '.join(map(shlex.quote, args))}"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self._session = None

    def __enter__(self):
        try:
            targets = self._call("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self._session = self._call("Target.attachToTarget",
                                       {"targetId": page["targetId"], "flatten": True})["sessionId"]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, params=None, session=None, timeout=30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, reply
                    return reply["result"]
            if select.select([self._from_chrome], [], [], 0.5)[0]:
                self._buf += os.read(self._from_chrome, 1 << 20)
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        """The value of `expression` in the page (JSON-serialisable values only)."""
        reply = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self._session)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("Page.captureScreenshot", {"format": "png"}, self._session)["data"])

    def close(self):
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)
