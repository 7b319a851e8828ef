"""Issue 4, tests 6 and 7: operating the daemon. SIGTERM and SIGINT stop `meterd run` with exit
0 within 5 s and a retained `offline`/`shutdown` gateway status (not the will's
`connection-lost`); a configuration error exits 2 with `FILE:LINE:COL: key: message`; and
`meterd demo` (the README's main command) prints a reading of every demo meter within 10 s
and stops on Ctrl-C or SIGHUP (a closed terminal) with exit 0, removing its temporary spool."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import wait_for
from daemon_rig import GATEWAY, METERS, PREFIX, Proc, Rig


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_offline_status(rig, sig):
    broker = rig.broker()
    sub = rig.collector(broker.port)
    rig.start_sim()
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="1s")
    d = rig.start_daemon()
    wait_for(lambda: {doc["meter"] for _, doc in sub.readings()} >= set(METERS), 60, "readings")
    topic = f"{PREFIX}/{GATEWAY}/status"
    assert sub.last_retained(topic)["state"] == "online"
    t0 = time.monotonic()
    d.signal(sig)
    code = d.wait(15)
    took = time.monotonic() - t0
    assert code == 0, d.text()[-2000:]
    assert took < 5.0, f"stop took {took:.1f} s"
    wait_for(lambda: sub.last_retained(topic)["state"] == "offline", 5, "offline status")
    status = sub.last_retained(topic)
    assert status.get("reason") == "shutdown", status
    # A fresh subscriber gets the same from the retained store (not the will).
    late = rig.collector(broker.port, client_id="hil-late")
    wait_for(lambda: late.last_retained(topic) is not None, 10, "retained status")
    assert late.last_retained(topic)["reason"] == "shutdown"


def test_config_error_exits_2_with_location(rig):
    rig.write_config("mqtt://127.0.0.1:9")
    text = rig.config.read_text().replace('interval = "1s"', 'interval = "fortnight"', 1)
    rig.config.write_text(text)
    line_no = next(i for i, l in enumerate(text.splitlines(), 1) if "fortnight" in l)
    d = rig.start_daemon()
    assert d.wait(20) == 2
    err = d.err.read_text().strip()
    first = err.splitlines()[0]
    m = re.search(rf"{re.escape(str(rig.config))}:(\d+):(\d+): ([\w.\[\]]+): (.+)", first)
    assert m, err
    assert int(m.group(1)) == line_no, (first, line_no)
    assert m.group(3) == "bus[0].meter[0].interval", first


DEMO_METERS = ["000000000001", "000000000002", "000000000003", "sdm630-1", "din-rail-2", "dtsu666-1", "sdm120-2"]


def demo_meters_seen(text):
    return {m for m in DEMO_METERS if re.search(rf"^\S+\s+{re.escape(m)}\s+\S+\s+seq \d+$", text, re.M)}


def test_demo_prints_every_meter_within_10s_and_stops_on_ctrl_c(meterd, workdir):
    tmp = workdir / "tmp"
    tmp.mkdir()
    demo = Proc([meterd, "demo"], workdir, "demo", env={**os.environ, "TMPDIR": str(tmp)})
    try:
        t0 = time.monotonic()
        try:
            wait_for(lambda: demo_meters_seen(demo.out.read_text()) == set(DEMO_METERS) or not demo.alive(), 10,
                     "a reading of every demo meter")
        except TimeoutError:
            pass
        seen = demo_meters_seen(demo.out.read_text())
        took = time.monotonic() - t0
        assert seen == set(DEMO_METERS), (
            f"after {took:.1f} s no reading of {sorted(set(DEMO_METERS) - seen)}:\n{demo.text()[-3000:]}")
        assert list(tmp.glob("meterd-demo-*")), "the demo keeps its spool in a temporary directory"
        demo.signal(signal.SIGINT)
        assert demo.wait(10) == 0, demo.text()[-2000:]
        assert list(tmp.iterdir()) == [], "the demo's temporary spool is removed when it stops"
    finally:
        demo.stop()


def test_demo_stops_cleanly_when_its_terminal_closes(meterd, workdir):
    """Closing the technician's terminal sends SIGHUP: the same clean stop as Ctrl-C, exit 0,
    and no temporary spool left behind."""
    tmp = workdir / "tmp"
    tmp.mkdir()
    demo = Proc([meterd, "demo"], workdir, "demo", env={**os.environ, "TMPDIR": str(tmp)})
    try:
        wait_for(lambda: demo_meters_seen(demo.out.read_text()) or not demo.alive(), 10, "a first reading")
        assert demo.alive(), demo.text()[-2000:]
        demo.signal(signal.SIGHUP)
        assert demo.wait(10) == 0, demo.text()[-2000:]
        assert "meterd demo: stopping" in demo.out.read_text()
        assert list(tmp.iterdir()) == [], "the demo's temporary spool is removed when it stops"
    finally:
        demo.stop()


def test_demo_with_duration_stops_by_itself(meterd, workdir):
    t0 = time.monotonic()
    out = subprocess.run([meterd, "demo", "--duration", "15s"], capture_output=True, text=True, timeout=40)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    assert 14 <= took < 25, took
    assert demo_meters_seen(out.stdout) == set(DEMO_METERS), out.stdout[-3000:]
