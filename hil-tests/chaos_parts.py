"""Parts of the chaos soak (test_daemon_chaos.py): a cuttable TCP link, a socat pty bridge, a
libfaketime clock for meterd, and the bookkeeping of what was injected when.

Everything listens on loopback and is stopped by the test that started it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from conftest import wait_for

FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)


def faketime_lib() -> str | None:
    for p in FAKETIME_LIBS:
        if Path(p).exists():
            return p
    return None


class LinkProxy:
    """A TCP forwarder between meterd and a simulator port ("a serial device server" or a
    Modbus TCP meter). `cut()` closes the listener and every connection: meterd's connect is
    refused until `restore()` listens again on the same port."""

    def __init__(self, upstream_port: int, listen_port: int):
        self.upstream = upstream_port
        self.port = listen_port
        self.lock = threading.Lock()
        self.socks: set[socket.socket] = set()
        self.server: socket.socket | None = None
        self.restore()

    @property
    def is_up(self) -> bool:
        return self.server is not None

    def restore(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        s.listen(8)
        self.server = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                if self.server is not server:  # cut while connecting
                    client.close()
                    up.close()
                    continue
                self.socks |= {client, up}
            threading.Thread(target=self._pump, args=(client, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                self.socks.discard(src)
                self.socks.discard(dst)
            src.close()

    def cut(self):
        with self.lock:
            server, self.server = self.server, None
            socks, self.socks = list(self.socks), set()
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.cut()


class PtyBridge:
    """socat: a pty (meterd's "serial port", at `link`) bridged to the simulator's raw TCP
    port. `cut()` SIGKILLs socat (the pty vanishes, as a USB adapter pulled out);
    `restore()` makes a new pty under the same path."""

    def __init__(self, link: Path, upstream_port: int, directory: Path):
        self.link = link
        self.upstream = upstream_port
        self.log = directory / "socat.log"
        self.proc: subprocess.Popen | None = None
        self.unexpected_exits = 0
        self.restore()

    @property
    def is_up(self) -> bool:
        return self.proc is not None

    def restore(self):
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.link}", f"tcp:127.0.0.1:{self.upstream}"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.link.exists(), 10, "socat pty bridge")

    def check(self):
        """Restarts socat if it exited by itself (counted: it should not)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits += 1
            self.proc = None
            self.restore()

    def cut(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
        # At once, as udev removes an unplugged adapter's /dev/serial/by-id link: a dangling
        # link to /dev/pts/N becomes live again when another process gets pty N, and meterd
        # then opened a stranger's pty (seen: two chaos runs polling each other's simulators).
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()

    def close(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class FakeClock:
    """meterd's wall clock, stepped through libfaketime's timestamp file (re-read on every
    call: FAKETIME_NO_CACHE=1). CLOCK_MONOTONIC is left alone (FAKETIME_DONT_FAKE_MONOTONIC=1).

    `timeline` holds (host UTC seconds when the step took effect, offset in seconds)."""

    def __init__(self, directory: Path, lib: str):
        self.lib = lib
        self.file = directory / "faketime.rc"
        self.offset = 0
        self.timeline: list[tuple[float, int]] = []
        self.set(0)

    def env(self) -> dict:
        return {
            "LD_PRELOAD": self.lib,
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            # File times stay real (SQLite does not care; it keeps the test's files sane).
            "NO_FAKE_STAT": "1",
        }

    def set(self, offset: int):
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        os.replace(tmp, self.file)  # never an empty file under meterd's nose
        self.offset = offset
        self.timeline.append((time.time(), offset))

    def offset_at(self, t: float) -> int:
        off = 0
        for at, o in self.timeline:
            if at <= t:
                off = o
        return off


def vm_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_parts_kib(pid: int) -> dict | None:
    """VmRSS split as /proc/PID/smaps_rollup has it (Rss, Anonymous, and file pages = Rss −
    Anonymous − ShmemRss... approximated as Rss − Anonymous): whether growth is heap or mapped
    files (SQLite's shared-memory index, the binary)."""
    try:
        fields = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[name.strip()] = int(parts[0])
    except OSError:
        return None
    rss, anon = fields.get("Rss"), fields.get("Anonymous")
    if rss is None or anon is None:
        return None
    return {"rss": rss, "anon": anon, "file": rss - anon}


def have(tool: str) -> bool:
    return shutil.which(tool) is not None or Path(f"/usr/sbin/{tool}").exists()
