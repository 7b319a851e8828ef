"""Fixtures for the HIL suite: the meterd binary, pty pairs, a real mosquitto, free ports.

Everything a test starts it also stops, and everything listens on loopback only.
"""
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption(
        "--long", action="store_true",
        help="the chaos soak runs for 1 hour instead of 5 minutes "
             "(METERD_CHAOS_SECONDS, when set, wins)")


def pytest_configure(config):
    # Before the test modules are imported: test_daemon_chaos.py reads it at import.
    if config.getoption("--long"):
        os.environ.setdefault("METERD_CHAOS_SECONDS", "3600")


def pytest_report_header(config):
    return f"meterd binary: {meterd_path()}"


def meterd_path() -> Path:
    return Path(os.environ.get("METERD_BIN", ROOT / "target" / "debug" / "meterd"))


@pytest.fixture(scope="session")
def meterd() -> Path:
    path = meterd_path()
    if not path.exists():
        pytest.fail(f"{path} not built: run `cargo build` (hil-tests/run does)")
    return path


# Ports handed out in this pytest process: never handed out twice.
_HANDED_OUT: set[int] = set()


def quiet_port() -> int:
    """A free loopback port below the ephemeral range (32768+), never the same twice in one
    pytest run. A port from bind(0) is an ephemeral one: once released it can come back from
    the next bind(0) (two listeners of one test on one port: the second fails, and a probe of
    its port finds the first, e.g. /api/status sent to a simulated meter's port, which never
    answers), or be taken as the source port of some connection before the listener binds it
    (TCP self-connect, or a broker that cannot start). While a test's broker is down its port is
    free and could go to another test's broker on this shared machine.
    HIL_QUIET_PORTS=LOW-HIGH narrows the range: hil-tests/run gives each pytest it runs side by
    side a range of its own."""
    low, high = 20000, 32000
    if os.environ.get("HIL_QUIET_PORTS"):
        low, high = (int(x) for x in os.environ["HIL_QUIET_PORTS"].split("-"))
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {low}..{high}")


def free_port() -> int:
    """A port for a test's listener (see quiet_port)."""
    return quiet_port()


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PtyPair:
    """Two linked pseudo-terminals made by socat: `a` and `b` are their stable paths."""

    def __init__(self, directory: Path):
        self.a = directory / "ttyA"
        self.b = directory / "ttyB"
        self.proc = subprocess.Popen(
            ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.a.exists() and self.b.exists(), 5, "socat pty pair")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def pty_pair(tmp_path):
    if shutil.which("socat") is None:
        pytest.fail("socat missing: run hil-tests/setup")
    pair = PtyPair(tmp_path)
    yield pair
    pair.close()


class Mosquitto:
    """A real mosquitto broker on its own loopback port, with its own config and data dir."""

    def __init__(self, directory: Path, extra_config: str = ""):
        self.port = free_port()
        self.dir = directory
        self.conf = directory / "mosquitto.conf"
        self.extra = extra_config
        self.proc = None
        self.start()

    def start(self):
        # As root, mosquitto drops to the `mosquitto` user unless told `user root`.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n{self.extra}\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), 10, f"mosquitto on {self.port}")

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto missing: run hil-tests/setup")
    broker = Mosquitto(tmp_path)
    yield broker
    broker.stop()


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="meterd-hil-") as d:
        yield Path(d)
