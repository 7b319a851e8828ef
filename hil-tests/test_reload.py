"""`meterd run` reloads its configuration on SIGHUP without losing or delaying a reading.

`meterd simulate` serves two raw-TCP buses (a "serial device server" with DL/T 645 meters and
one with Modbus RTU meters, ground-truth log on); `meterd run` publishes to a real mosquitto
and a paho subscriber records every reading. Then, on the Modbus bus only:

1. SIGHUP with a meter added: the new meter starts publishing;
2. SIGHUP with a meter removed: it stops (no request reaches it any more);
3. SIGHUP with a broken file: rejected, the located reason in the log, the old
   configuration keeps running;
4. SIGHUP with a new gateway id and broker: a warning says they need a restart, and readings
   keep going to the running broker under the running id.

Throughout, the untouched DL/T 645 bus must not notice: every one of its meters' `seq` is
contiguous from the first reading to the last, consecutive read times are never further
apart than 1.5 poll intervals, and there is exactly one reading per wall-clock slot (a
restarted bus task re-polls its current slot at once, which this catches: checked by making
every bus restart on reload, which fails here).
"""
import json
import re
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port, port_open, wait_for

# Seconds, every meter. Two DL/T 645 polls take ~1.4 s at 9600 baud: a 3 s slot leaves room,
# so each reading's read time falls in the (wall-clock aligned) slot it was polled for.
INTERVAL = 3.0
GATEWAY = "gw-reload"
DLT_METERS = ["000000000101", "000000000102"]


def sim_config(dlt_port: int, rtu_port: int) -> str:
    return f"""
[[port]]
name = "dlt-sim"
tcp = "127.0.0.1:{dlt_port}"
baud = 9600
parity = "even"
wire_time = true
reply_latency = "20ms"

[[port.meter]]
protocol = "dlt645-2007"
address = "{DLT_METERS[0]}"
profile = "dlt645-single-phase"
seed = 1

[[port.meter]]
protocol = "dlt645-2007"
address = "{DLT_METERS[1]}"
profile = "dlt645-single-phase"
seed = 2

[[port]]
name = "rtu-sim"
tcp = "127.0.0.1:{rtu_port}"
baud = 9600
parity = "even"
wire_time = true
reply_latency = "5ms"

[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm120"
seed = 11

[[port.meter]]
protocol = "modbus-rtu"
unit = 2
profile = "eastron-sdm120"
seed = 12

[[port.meter]]
protocol = "modbus-rtu"
unit = 3
profile = "eastron-sdm120"
seed = 13
"""


def gateway_config(data_dir: Path, broker_port: int, dlt_port: int, rtu_port: int, units, gateway=GATEWAY) -> str:
    text = f"""
gateway = "{gateway}"
data_dir = "{data_dir}"

[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"

[[bus]]
name = "dlt"
transport = "tcp"
host = "127.0.0.1:{dlt_port}"
baud = 9600
"""
    for address in DLT_METERS:
        text += f"""
[[bus.meter]]
protocol = "dlt645-2007"
address = "{address}"
profile = "dlt645-single-phase"
interval = "{INTERVAL:g}s"
"""
    text += f"""
[[bus]]
name = "rtu"
transport = "tcp"
host = "127.0.0.1:{rtu_port}"
baud = 9600
"""
    for unit in units:
        text += f"""
[[bus.meter]]
protocol = "modbus-rtu"
unit = {unit}
profile = "eastron-sdm120"
interval = "{INTERVAL:g}s"
"""
    return text


def parse_time(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Readings:
    """Every reading batch published for the gateway, deduplicated by id."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.by_meter = {}  # meter -> {seq: read_at}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reload-test")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            f"meterd/{GATEWAY}/meters/+/readings", qos=1
        )
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def on_message(self, client, userdata, msg):
        batch = json.loads(msg.payload)
        with self.lock:
            self.by_meter.setdefault(batch["meter"], {})[batch["seq"]] = parse_time(batch["read_at"])

    def count(self, meter: str) -> int:
        with self.lock:
            return len(self.by_meter.get(meter, {}))

    def series(self, meter: str):
        with self.lock:
            return sorted(self.by_meter.get(meter, {}).items())

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def truth_times(path: Path, meter: str):
    """Host times of every reply the simulator sent to `meter`."""
    times = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if entry["meter"] == meter:
            times.append(parse_time(entry["time"]))
    return times


@pytest.fixture
def sim(meterd, workdir):
    dlt_port, rtu_port = free_port(), free_port()
    conf = workdir / "sim.toml"
    conf.write_text(sim_config(dlt_port, rtu_port))
    truth = workdir / "truth.jsonl"
    proc = subprocess.Popen(
        [str(meterd), "simulate", "--config", str(conf), "--truth", str(truth)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: port_open(dlt_port) and port_open(rtu_port), 10, "simulator ports")
    yield dlt_port, rtu_port, truth
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_sighup_adds_and_removes_meters_and_rejects_a_broken_file(meterd, workdir, mosquitto, sim):
    dlt_port, rtu_port, truth = sim
    data = workdir / "data"
    conf = workdir / "meterd.toml"
    log_path = workdir / "meterd.log"

    def write(units, broker_port=mosquitto.port, gateway=GATEWAY):
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(gateway_config(data, broker_port, dlt_port, rtu_port, units, gateway))
        tmp.replace(conf)  # atomic, as an operator's editor or config management would

    def log():
        # Without the colours the human log format puts around field names.
        return re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))

    def hup_and_wait(marker: str):
        before = log().count(marker)
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: log().count(marker) > before, 15, f"log line {marker!r}")

    write([1, 2])
    readings = Readings(mosquitto.port)
    log_file = open(log_path, "w")
    daemon = subprocess.Popen(
        [str(meterd), "run", "--config", str(conf)], stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        untouched = DLT_METERS
        unit1, unit2, unit3 = "rtu-unit1", "rtu-unit2", "rtu-unit3"
        for m in untouched + [unit1, unit2]:
            wait_for(lambda m=m: readings.count(m) >= 3, 30, f"3 readings of {m}")

        # 1. A meter added to the Modbus bus starts publishing; the DL/T 645 bus is kept.
        write([1, 2, 3])
        hup_and_wait("reload: ")
        assert "reload: 1 buses kept, 1 restarted, 0 added, 0 removed" in log(), log()
        wait_for(lambda: readings.count(unit3) >= 3, 15, "3 readings of the added meter")

        # 2. A meter removed: after the reload (and the poll in progress), nothing reaches it.
        write([1, 3])
        hup_and_wait("reload: ")
        assert log().count("reload: 1 buses kept, 1 restarted, 0 added, 0 removed") == 2, log()
        removed_at = time.time()
        count_unit2 = readings.count(unit2)
        time.sleep(4 * INTERVAL)
        assert readings.count(unit2) == count_unit2, "the removed meter is still published"
        late = [t for t in truth_times(truth, unit2.replace("rtu-", "rtu-sim-")) if t > removed_at + 0.5]
        assert late == [], f"the removed meter was still polled at {late}"
        count_unit1, count_unit3 = readings.count(unit1), readings.count(unit3)

        # 3. A broken file is rejected with its located reason; everything keeps running.
        conf.write_text(
            gateway_config(data, mosquitto.port, dlt_port, rtu_port, [1, 3]).replace("unit = 3", "unit = 0")
        )
        hup_and_wait("reload rejected")
        rejected = [l for l in log().splitlines() if "reload rejected" in l]
        assert len(rejected) == 1
        assert re.search(r"meterd\.toml:\d+:\d+: bus\[1\]\.meter\[1\]\.unit: expected 1 to 247", rejected[0]), rejected
        time.sleep(4 * INTERVAL)
        assert readings.count(unit1) >= count_unit1 + 2, "the old configuration stopped polling"
        assert readings.count(unit3) >= count_unit3 + 2, "the old configuration stopped polling"
        assert readings.count(unit2) == count_unit2

        # A good file again still reloads (SIGHUP is handled every time). Its new gateway id and
        # broker need a restart: a warning names them and the running ones stay in force.
        write([1, 3], broker_port=free_port(), gateway="gw-elsewhere")
        hup_and_wait("reload: 2 buses kept")
        assert "reload: 2 buses kept, 0 restarted, 0 added, 0 removed" in log(), log()
        assert re.search(r"apply only after a restart.*settings=gateway, mqtt", log()), log()
        count_dlt = readings.count(untouched[0])
        time.sleep(2 * INTERVAL)
        assert readings.count(untouched[0]) >= count_dlt + 1, "still published to the running broker"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0, log()
        print("\n".join(l for l in log().splitlines() if "reload" in l.lower()))
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log_file.close()
    # What was stored before the stop is published by then; give the subscriber a moment.
    time.sleep(0.5)
    readings.close()

    # The untouched bus: no reading lost, no gap in polling, across all four reloads.
    for meter in untouched:
        series = readings.series(meter)
        seqs = [s for s, _ in series]
        assert len(seqs) >= 8, (meter, len(seqs))
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{meter}: seq gap {seqs}"
        times = [t for _, t in series]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert max(gaps) <= 1.5 * INTERVAL, f"{meter}: polling gap of {max(gaps):.3f}s: {gaps}"
        # Exactly one reading per slot: none skipped, and none twice (a restarted bus task polls
        # its current slot again at once, which this catches). The first reading is left out:
        # at start the current slot is polled at once, late in it, and may spill into the next.
        slots = [int(t // INTERVAL) for t in times[1:]]
        steps = [b - a for a, b in zip(slots, slots[1:])]
        assert set(steps) == {1}, f"{meter}: slots not read exactly once (restarted?): {steps}"
    gaps1 = [b - a for (_, a), (_, b) in zip(readings.series(unit1), readings.series(unit1)[1:])]
    print("restarted bus, rtu-unit1 gaps:", [round(g, 2) for g in gaps1])
    # The restarted bus lost nothing either: the poll in progress at each stop was stored.
    for meter in (unit1, unit3):
        seqs = [s for s, _ in readings.series(meter)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{meter}: seq gap {seqs}"
    print({m: readings.count(m) for m in readings.by_meter})
