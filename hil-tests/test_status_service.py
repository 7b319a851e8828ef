"""HIL: the daemon's local diagnostics service, seen as a technician and a scraper see it.

A real `meterd simulate` process serves four meters on two loopback "serial device servers"
(DL/T 645 and Modbus RTU over raw TCP): two good ones, one dead (`no_reply` always) and one
noisy (`corrupt` + `noise`). A real `meterd run` polls them and publishes to a real mosquitto.
The tests read its service the way people do: `/api/status`, `meterd status` (table and
--json), `/metrics` through the Python Prometheus parser, `POST /api/read` while polling,
and the status page rendered by headless Chromium (DOM checked, screenshot saved).
"""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, port_open, wait_for
from headless import FLAGS, DevToolsPage, chromium

INTERVAL_S = 2

SIM = """
[[port]]
name = "dlt"
tcp = "127.0.0.1:{dlt}"
baud = 2400
parity = "even"
wire_time = false

[[port.meter]]
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
seed = 1

[[port.meter]]
protocol = "dlt645-2007"
address = "000000000002"
profile = "dlt645-single-phase"
seed = 2
faults = {{ corrupt = {{ probability = 0.4 }}, noise = {{ every = 1, bytes = 4 }} }}

[[port]]
name = "rtu"
tcp = "127.0.0.1:{rtu}"
baud = 9600
parity = "even"
wire_time = false

[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
seed = 11

[[port.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "eastron-sdm630"
seed = 13
faults = {{ no_reply = {{ probability = 1.0 }} }}
"""

DAEMON = """
gateway = "gw-hil"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
status_interval = "2s"

[service]
listen = "127.0.0.1:{service}"

[[bus]]
name = "dlt"
transport = "tcp"
host = "127.0.0.1:{dlt}"
baud = 2400
timing = {{ response_timeout = "300ms", retries = 1, turnaround = "5ms" }}

[[bus.meter]]
id = "dlt-1"
protocol = "dlt645-2007"
address = "000000000001"
profile = "dlt645-three-phase"
interval = "{interval}s"

[[bus.meter]]
id = "dlt-noisy"
protocol = "dlt645-2007"
address = "000000000002"
profile = "dlt645-single-phase"
interval = "{interval}s"

[[bus]]
name = "rtu"
transport = "tcp"
host = "127.0.0.1:{rtu}"
baud = 9600
timing = {{ response_timeout = "200ms", retries = 1, turnaround = "5ms" }}

[[bus.meter]]
id = "rtu-1"
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
interval = "{interval}s"

[[bus.meter]]
id = "rtu-dead"
protocol = "modbus-rtu"
unit = 3
profile = "eastron-sdm630"
interval = "{interval}s"
"""


def ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def http(url, method="GET", body=None, timeout=30):
    req = urllib.request.Request(url, method=method, data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Gateway:
    """Simulator + daemon processes, stopped in `close`."""

    def __init__(self, meterd, workdir: Path, mosquitto_port: int):
        self.dir = workdir
        self.ports = {"dlt": free_port(), "rtu": free_port(), "service": free_port()}
        (workdir / "sim.toml").write_text(SIM.format(**self.ports))
        self.sim = subprocess.Popen(
            [str(meterd), "simulate", "--config", str(workdir / "sim.toml")],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "sim.log", "w"),
        )
        wait_for(lambda: port_open(self.ports["dlt"]) and port_open(self.ports["rtu"]), 15, "simulator")
        (workdir / "data").mkdir()
        (workdir / "meterd.toml").write_text(DAEMON.format(
            data=workdir / "data", mqtt=mosquitto_port, interval=INTERVAL_S, **self.ports))
        self.log = workdir / "meterd.log"
        self.daemon = subprocess.Popen(
            [str(meterd), "run", "--config", str(workdir / "meterd.toml")],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
        )
        self.url = f"http://127.0.0.1:{self.ports['service']}"
        wait_for(lambda: port_open(self.ports["service"]) or self.daemon.poll() is not None,
                 15, "diagnostics service")
        # The port answering is not enough: it must be this daemon's service.
        assert self.daemon.poll() is None, self.log.read_text()[-3000:]

    def status(self):
        code, text = http(self.url + "/api/status")
        assert code == 200, text
        return json.loads(text)

    def meters(self, status=None):
        status = status or self.status()
        return {m["id"]: m for b in status["buses"] for m in b["meters"]}

    def close(self):
        for p in (self.daemon, self.sim):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


@pytest.fixture
def gateway(meterd, mosquitto, tmp_path):
    gw = Gateway(meterd, tmp_path, mosquitto.port)
    yield gw
    gw.close()
    assert gw.daemon.returncode == 0, gw.log.read_text()[-3000:]


def settled(gw):
    """Waits until the dead meter is degraded, the noisy one has checksum errors, and the
    other three answered; returns that status."""
    found = {}

    def ready():
        s = gw.status()
        m = gw.meters(s)
        buses = {b["name"]: b for b in s["buses"]}
        ok = (m["rtu-dead"]["state"] == "degraded"
              and m["dlt-noisy"]["checksum_errors"] > 0
              and all(m[i]["polls_ok"] > 0 for i in ("dlt-1", "dlt-noisy", "rtu-1"))
              # A poll counts when it arrives; its batch shows once stored (one commit window,
              # 100 ms, later).
              and all(m[i]["last_reading"] for i in ("dlt-1", "dlt-noisy", "rtu-1")))
        if ok:
            found["s"] = s
        return ok

    wait_for(ready, 60, "dead meter degraded and noisy meter counted")
    return found["s"]


def test_status_shows_dead_noisy_and_good_meters(gateway, meterd):
    s = settled(gateway)
    m = gateway.meters(s)
    buses = {b["name"]: b for b in s["buses"]}
    dead = m["rtu-dead"]
    assert dead["state"] in ("degraded", "unreachable")
    assert "no reply" in dead["last_error"]
    assert dead["consecutive_failures"] >= 3
    assert dead["last_success"] is None
    assert dead["success"]["today"]["ok"] == 0 and dead["success"]["today"]["rate"] == 0.0
    assert buses["dlt"]["checksum_errors"] > 0 and buses["dlt"]["noise_bytes"] > 0
    # The noisy meter carries its own checksum errors; the others none.
    assert m["dlt-noisy"]["checksum_errors"] > 0 and m["dlt-noisy"]["noise_bytes"] > 0
    assert m["dlt-1"]["checksum_errors"] == 0 and m["rtu-1"]["checksum_errors"] == 0
    for i in ("dlt-1", "dlt-noisy", "rtu-1"):
        assert m[i]["state"] == "ok", m[i]
        assert m[i]["last_reading"]["values"], i
        assert all("quality" in v for v in m[i]["last_reading"]["values"])
    # The concentrator KPI: 3 of 4 meters read today.
    g = s["gateway"]["success"]
    assert (g["meters"], g["today"]["meters_read"], g["today"]["rate"]) == (4, 3, 0.75)
    assert buses["rtu"]["success"]["today"]["rate"] == 0.5
    assert s["gateway"]["uplink"]["state"] == "connected"

    # The CLI, as JSON and as a table.
    out = subprocess.run([str(meterd), "status", "--url", gateway.url, "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cli = gateway.meters(json.loads(out.stdout))
    assert cli["rtu-dead"]["state"] in ("degraded", "unreachable")
    assert "no reply" in cli["rtu-dead"]["last_error"]
    assert all(cli[i]["state"] == "ok" for i in ("dlt-1", "dlt-noisy", "rtu-1"))
    assert cli["dlt-noisy"]["checksum_errors"] > 0
    out = subprocess.run([str(meterd), "status", "--url", gateway.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    row = next(line for line in out.stdout.splitlines() if " rtu-dead " in line)
    assert "degraded" in row and "no reply" in row
    assert "reading success" in out.stdout and "3 of 4 meters read" in out.stdout
    bus_line = next(line for line in out.stdout.splitlines() if line.startswith("bus dlt:"))
    assert "checksum errors" in bus_line
    header = next(line for line in out.stdout.splitlines() if line.startswith("bus ") and "meter" in line)
    noisy = next(line for line in out.stdout.splitlines() if " dlt-noisy " in line)
    column = header.index("checksum errors")
    assert int(noisy[column:].split()[0]) > 0, (header, noisy)


def test_metrics_parse_and_match_status(gateway):
    settled(gateway)
    before = gateway.status()
    code, text = http(gateway.url + "/metrics")
    after = gateway.status()
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {}
    for f in families.values():
        for sample in f.samples:
            value[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert families["meterd_bus_transactions"].type == "counter"

    def between(name, labels, pick):
        v = value[(name, tuple(sorted(labels.items())))]
        lo = pick(before, labels)
        hi = pick(after, labels)
        assert lo <= v <= hi, (name, labels, lo, v, hi)

    def bus(st, labels):
        return next(b for b in st["buses"] if b["name"] == labels["bus"])

    def meter(st, labels):
        return gateway.meters(st)[labels["meter"]]

    for b in ("dlt", "rtu"):
        for key in ("transactions", "timeouts", "checksum_errors", "noise_bytes", "retries"):
            between(f"meterd_bus_{key}_total", {"bus": b}, lambda st, l, k=key: bus(st, l)[k])
    for b, mid in (("dlt", "dlt-1"), ("dlt", "dlt-noisy"), ("rtu", "rtu-1"), ("rtu", "rtu-dead")):
        labels = {"bus": b, "meter": mid}
        between("meterd_meter_polls_ok_total", labels, lambda st, l: meter(st, l)["polls_ok"])
        between("meterd_meter_polls_failed_total", labels, lambda st, l: meter(st, l)["polls_failed"])
        between("meterd_meter_checksum_errors_total", labels, lambda st, l: meter(st, l)["checksum_errors"])
        between("meterd_meter_timeouts_total", labels, lambda st, l: meter(st, l)["timeouts"])
    assert value[("meterd_meter_polls_ok_total", (("bus", "rtu"), ("meter", "rtu-dead")))] == 0
    assert value[("meterd_meter_state", (("bus", "rtu"), ("meter", "rtu-dead"), ("state", "degraded")))] == 1
    assert value[("meterd_success_rate_today", ())] == 0.75
    assert value[("meterd_meters", ())] == 4


def test_one_shot_read_during_polling_keeps_the_schedule(gateway, mosquitto):
    settled(gateway)
    # Watch the scheduled readings of rtu-1 as the billing core does.
    seen = []
    gw_status = []
    lock = threading.Lock()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hil-status-{os.getpid()}")

    def on_message(_c, _u, msg):
        with lock:
            (gw_status if msg.topic.endswith("gw-hil/status") else seen).append(json.loads(msg.payload))

    client.on_message = on_message
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("meterd/gw-hil/meters/rtu-1/readings", qos=1)
    client.subscribe("meterd/gw-hil/status", qos=1)
    client.loop_start()
    try:
        time.sleep(3 * INTERVAL_S)
        asked = time.time()
        code, text = http(gateway.url + "/api/read", "POST", b'{"meter": "rtu-1"}')
        assert code == 200, text
        batch = json.loads(text)
        assert batch["meter"] == "rtu-1"
        read_at = batch["read_at"]
        assert any(v["quality"] == "good" for v in batch["values"])
        assert ts(read_at) >= asked - 0.01, (read_at, asked)
        # Unknown meter and a malformed body.
        code, text = http(gateway.url + "/api/read", "POST", b'{"meter": "nope"}')
        assert code == 404 and "nope" in json.loads(text)["error"]
        code, _ = http(gateway.url + "/api/read", "POST", b"{}")
        assert code == 400
        time.sleep(4 * INTERVAL_S)
    finally:
        client.loop_stop()
        client.disconnect()
    with lock:
        got = list(seen)
    # Retained/old readings may come first; keep the ones read while we watched.
    times = sorted(r["read_at"] for r in got)
    assert read_at not in times, "the one-shot read was published as a scheduled reading"
    stamps = [ts(t) for t in times]
    recent = [t for t in stamps if t >= stamps[-1] - 6 * INTERVAL_S]
    gaps = [b - a for a, b in zip(recent, recent[1:])]
    assert len(recent) >= 5, times
    assert all(g < 1.6 * INTERVAL_S for g in gaps), gaps
    # The retained gateway status carries the KPI (status_interval is 2 s here).
    with lock:
        rates = [g["reading_success"] for g in gw_status if g.get("state") == "online" and "reading_success" in g]
    assert rates, gw_status
    assert rates[-1]["meters"] == 4 and rates[-1]["meters_read_today"] == 3
    assert rates[-1]["rate_today"] == 0.75
    # The one-shot read became the meter's last batch on the status page.
    assert gateway.meters()["rtu-1"]["last_reading"]["values"]


CHROMIUM_FLAGS = FLAGS


def live_page(url, wait_s):
    """Opens `url` in headless Chromium driven over the DevTools pipe, lets the page run
    `wait_s` seconds (so its EventSource fills the live trace), and returns the trace lines and
    a screenshot (PNG bytes)."""
    with DevToolsPage(url) as page:
        time.sleep(wait_s)
        lines = page.evaluate("Array.from(document.getElementById('trace').childNodes).map(n => n.textContent)")
        page.evaluate("document.getElementById('trace').scrollIntoView()")
        return lines, page.screenshot()


def test_status_page_in_headless_chromium(gateway, tmp_path):
    settled(gateway)
    browser = chromium()
    base = CHROMIUM_FLAGS
    with tempfile.TemporaryDirectory(prefix="meterd-chromium-") as profile:
        out = subprocess.run([browser, *base, f"--user-data-dir={profile}", "--dump-dom", gateway.url + "/"],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    for mid in ("dlt-1", "dlt-noisy", "rtu-1", "rtu-dead"):
        assert f'data-meter="{mid}"' in dom, mid
    row = dom[dom.index('data-meter="rtu-dead"'):]
    row = row[:row.index("</tr>")]
    assert 'data-state="degraded"' in row and "state-degraded" in row
    assert "no reply" in row
    ok_row = dom[dom.index('data-meter="rtu-1"'):]
    assert 'data-state="ok"' in ok_row[:ok_row.index("</tr>")]
    assert "checksum errors" in dom
    noisy = dom[dom.index('data-meter="dlt-noisy"'):]
    noisy = noisy[:noisy.index("</tr>")]
    cs = noisy[noisy.index('class="num cs">') + len('class="num cs">'):]
    assert int(cs.split()[0].split("<")[0]) > 0, noisy
    shot = tmp_path / "status-page.png"
    with tempfile.TemporaryDirectory(prefix="meterd-chromium-") as profile:
        out = subprocess.run([browser, *base, f"--user-data-dir={profile}", f"--screenshot={shot}",
                              "--window-size=1280,900", gateway.url + "/"],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, out.stderr[-2000:]
    # The live trace: the page's EventSource fills it while the page stays open.
    lines, png = live_page(gateway.url + "/?x=1", 3 * INTERVAL_S)
    live = tmp_path / "status-page-live.png"
    live.write_bytes(png)
    assert any(" rtu rtu-1 tx " in line and "read input registers" in line for line in lines), lines[:10]
    assert any(" dlt dlt-1 rx " in line for line in lines), lines[:10]
    keep = os.environ.get("METERD_SCREENSHOT_DIR")
    if keep:
        # status-page.png is test_status_page.py's (the page's trouble at a glance).
        shutil.copy(live, Path(keep) / "status-page-live.png")
    print(f"status page screenshot: {shot}")
    print(f"status page with the live trace: {live} ({len(lines)} trace lines)")


def test_cli_says_when_the_daemon_is_not_running(meterd):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["trace", "--daemon"], ["read", "--daemon", "--meter", "x"]):
        out = subprocess.run([str(meterd), *args, "--url", url], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "not running" in lines[0], out.stderr


def test_cli_read_and_trace_through_the_daemon(gateway, meterd):
    settled(gateway)
    out = subprocess.run([str(meterd), "read", "--daemon", "--url", gateway.url, "--meter", "rtu-1", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    batch = json.loads(out.stdout)
    assert batch["meter"] == "rtu-1" and any(v["quality"] == "good" for v in batch["values"])
    # The dead meter: the read is made, nothing good comes back: exit 1 with the reason.
    out = subprocess.run([str(meterd), "read", "--daemon", "--url", gateway.url, "--meter", "rtu-dead"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "no reply" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([str(meterd), "read", "--daemon", "--url", gateway.url, "--meter", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "HTTP 404" in out.stderr, out.stderr
    out = subprocess.run([str(meterd), "trace", "--daemon", "--url", gateway.url, "--meter", "dlt-noisy",
                          "--duration", f"{3 * INTERVAL_S}s"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(" dlt dlt-noisy tx " in line for line in lines), out.stdout
    assert any(" dlt dlt-noisy rx " in line and "|" in line for line in lines), out.stdout
    assert all(" dlt-noisy " in line for line in lines if not line.startswith("--")), out.stdout
