"""HIL: a dead or wrongly addressed meter costs one item's retries, not the whole profile's.

`meterd simulate` serves one DL/T 645-2007 meter on a raw-TCP "serial device server" at 2400
baud; the gateway also asks an address nobody has. With a three-phase profile (12 reads) and
300 ms × 2 attempts per read, asking every read took ~10 s per poll; a meter that does not
answer the first read is skipped for the rest of the poll, every quantity still reported,
bad with that read's reason. Checked through `meterd read` and through the daemon
(`meterd run`: a one-shot read of the dead meter, and its timeout counters in `/api/status`).
"""
import json
import subprocess
import time
import urllib.request

import pytest

from conftest import port_open, wait_for
from daemon_rig import Proc, quiet_port

DEAD = "000000000077"
TIMEOUT_S = 0.3
ATTEMPTS = 2
# One read's attempts, its late-reply guard and start-up, generously: far below 12 reads.
BOUND_S = ATTEMPTS * TIMEOUT_S * 3 + 1.5
REASON = "no reply within 300ms (2 attempts)"


@pytest.fixture
def sim(meterd, tmp_path):
    port = quiet_port()
    (tmp_path / "sim.toml").write_text(
        f'[[port]]\nname = "dlt"\ntcp = "127.0.0.1:{port}"\nbaud = 2400\nwire_time = true\n'
        f'[[port.meter]]\nprotocol = "dlt645-2007"\naddress = "000000000001"\nprofile = "dlt645-single-phase"\n'
    )
    proc = Proc([meterd, "simulate", "--config", tmp_path / "sim.toml"], tmp_path, "sim")
    wait_for(lambda: port_open(port) or not proc.alive(), 20, "simulator port")
    assert proc.alive(), proc.text()
    yield {"port": port, "dir": tmp_path}
    proc.stop()


def three_phase_quantities(meterd, sim):
    out = subprocess.run([str(meterd), "read", "--tcp", f"127.0.0.1:{sim['port']}", "--protocol", "dlt645-2007",
                          "--address", "000000000001", "--profile", "dlt645-three-phase", "--json",
                          "--timeout", "300ms"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [v["quantity"] for v in json.loads(out.stdout)["values"]]


def test_read_of_a_dead_meter_returns_after_one_reads_attempts(meterd, sim):
    started = time.monotonic()
    out = subprocess.run([str(meterd), "read", "--tcp", f"127.0.0.1:{sim['port']}", "--protocol", "dlt645-2007",
                          "--address", DEAD, "--profile", "dlt645-three-phase", "--timeout", "300ms",
                          "--retries", "1"], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    print(f"\nmeterd read of a dead three-phase meter: {elapsed:.2f} s (bound {BOUND_S:.1f} s)")
    assert out.returncode == 1, out.stderr
    assert out.stderr == (f"meterd read: no answer from meter {DEAD}: {REASON}; check the meter's address, "
                          "the protocol edition and the line settings (baud, parity)\n")
    assert elapsed < BOUND_S, f"{elapsed:.2f} s: every read was tried"


DAEMON = """
gateway = "gw-fail-fast"
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
[service]
listen = "127.0.0.1:{service}"
[[bus]]
name = "dlt"
transport = "tcp"
host = "127.0.0.1:{port}"
baud = 2400
timing = {{ response_timeout = "300ms", retries = 1 }}
[[bus.meter]]
id = "alive"
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-single-phase"
interval = "2s"
[[bus.meter]]
id = "dead"
protocol = "dlt645-2007"
address = "{dead}"
profile = "dlt645-three-phase"
interval = "2s"
"""


def test_the_daemons_poll_of_a_dead_meter_is_bounded(meterd, sim, mosquitto):
    quantities = three_phase_quantities(meterd, sim)
    d = sim["dir"]
    service = quiet_port()
    (d / "data").mkdir()
    (d / "meterd.toml").write_text(DAEMON.format(data=d / "data", mqtt=mosquitto.port, service=service,
                                                 port=sim["port"], dead=DEAD))
    daemon = Proc([meterd, "run", "--config", d / "meterd.toml"], d, "meterd")
    try:
        url = f"http://127.0.0.1:{service}"
        wait_for(lambda: port_open(service) or not daemon.alive(), 15, "diagnostics service")
        assert daemon.alive(), daemon.text()

        def dead():
            with urllib.request.urlopen(url + "/api/status", timeout=10) as r:
                st = json.loads(r.read())
            return next(m for b in st["buses"] for m in b["meters"] if m["id"] == "dead")

        wait_for(lambda: dead()["polls_failed"] >= 2, 30, "two polls of the dead meter")
        # A one-shot read of the dead meter, served between two polls: every configured
        # quantity, bad with the first read's reason, within one read's attempts.
        started = time.monotonic()
        out = subprocess.run([str(meterd), "read", "--daemon", "--url", url, "--meter", "dead", "--json"],
                             capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
        print(f"\none-shot read of the dead meter through the daemon: {elapsed:.2f} s (bound {BOUND_S:.1f} s)")
        assert out.returncode == 1, out.stderr
        values = json.loads(out.stdout)["values"]
        assert [v["quantity"] for v in values] == quantities, "nothing silently dropped"
        assert all(v["quality"] == "bad" and v["reason"] == REASON and v.get("value") is None
                   for v in values), values
        # Waiting for the poll in progress (if any) plus the read itself: both short now.
        assert elapsed < 2 * BOUND_S, f"{elapsed:.2f} s"
        # Health counts the attempts actually made: one read's two per poll, not 12 reads'.
        m = dead()
        print(f"dead meter: polls_failed {m['polls_failed']}, timeouts {m['timeouts']}")
        assert ATTEMPTS * m["polls_failed"] <= m["timeouts"] <= ATTEMPTS * (m["polls_failed"] + 1), m
        assert m["last_error"] == REASON, m
    finally:
        daemon.stop()
