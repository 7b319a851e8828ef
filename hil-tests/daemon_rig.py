"""Parts for the daemon acceptance tests (issue 4): the simulator, `meterd run`, a paho
subscriber, the configuration files that join them, and the checks every test shares.

Everything listens on loopback; every process is started by a test and stopped by it (the
`Proc` objects are stopped by `Rig.close()` even when a test fails).
"""
from __future__ import annotations

import decimal
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import jsonschema
import lz4.block
import paho.mqtt.client as mqtt

from conftest import ROOT, Mosquitto, free_port, port_open, quiet_port, wait_for

SCHEMAS = {
    name: json.loads((ROOT / "docs" / "schema" / f"{name}.v1.json").read_text())
    for name in ("reading", "gateway-status", "meter-status", "freeze", "completeness", "event",
                 "command", "command-result")
}
GATEWAY = "hil-gw"
PREFIX = "meterd"


def require_parts() -> bool:
    return os.environ.get("METERD_REQUIRE_PARTS") == "1"


class Proc:
    """A child process whose stdout and stderr go to files (readable while it runs)."""

    def __init__(self, argv, directory: Path, name: str, env=None):
        self.name = name
        self.out = directory / f"{name}.stdout"
        self.err = directory / f"{name}.stderr"
        self.argv = [str(a) for a in argv]
        with open(self.out, "ab") as o, open(self.err, "ab") as e:
            self.p = subprocess.Popen(self.argv, stdout=o, stderr=e, env=env, stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.p.pid

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def alive(self) -> bool:
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout):
        return self.p.wait(timeout)

    def stop(self):
        if self.alive():
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


class Collector:
    """A paho subscriber to everything under the prefix, QoS 1, with a persistent session
    (clean_session=False, fixed client id) that also resubscribes on every connect. Keeps every
    message (duplicates included) in arrival order."""

    def __init__(self, port: int, client_id: str = "hil-billing-core", auth: tuple | None = None):
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []
        self.connects = 0
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)
        if auth:
            self.c.username_pw_set(*auth)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect_async("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        if not self.subscribed.wait(15):
            raise TimeoutError(f"subscriber could not subscribe on {port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            self.connects += 1
            client.subscribe(f"{PREFIX}/#", qos=1)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def readings(self):
        """[(raw payload, parsed with exact decimals)] of every reading message, in order."""
        out = []
        for topic, payload, _ in self.snapshot():
            if topic.endswith("/readings"):
                out.append((payload, json.loads(payload, parse_float=decimal.Decimal)))
        return out

    def freezes(self):
        """[(raw payload, parsed with exact decimals)] of every freeze record, in order."""
        return [(payload, json.loads(payload, parse_float=decimal.Decimal))
                for topic, payload, _ in self.snapshot() if topic.endswith("/freezes")]

    def events(self):
        """[(raw payload, parsed)] of every meter event, in order."""
        return [(payload, json.loads(payload))
                for topic, payload, _ in self.snapshot() if topic.endswith("/events")]

    def last_retained(self, topic):
        for t, payload, _ in reversed(self.snapshot()):
            if t == topic:
                return json.loads(payload)
        return None

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def sim_config(d: Path, link: Path, modbus_port: int, *, dlt_meters=2) -> Path:
    """DL/T 645-2007 meters on a simulator-made pty (8N1: a pty cannot do parity) and two
    Modbus TCP meters."""
    dlt = [
        ("000000000001", "dlt645-three-phase", 1),
        ("000000000002", "dlt645-single-phase", 2),
    ][:dlt_meters]
    text = f'[clock]\nspeed = 1.0\n\n[[port]]\nname = "dlt-pty"\nserial = "pty"\nlink = "{link}"\nbaud = 9600\nparity = "none"\n'
    for addr, profile, seed in dlt:
        text += f'\n[[port.meter]]\nprotocol = "dlt645-2007"\naddress = "{addr}"\nprofile = "{profile}"\nseed = {seed}\n'
    text += f'\n[[port]]\nname = "mtcp"\nmodbus_tcp = "127.0.0.1:{modbus_port}"\n'
    for unit, profile, seed in ((1, "chint-dtsu666", 21), (2, "eastron-sdm120", 22)):
        text += f'\n[[port.meter]]\nprotocol = "modbus-tcp"\nunit = {unit}\nprofile = "{profile}"\nseed = {seed}\n'
    path = d / "sim.toml"
    path.write_text(text)
    return path


def meterd_config(d: Path, *, url: str, link: Path, modbus_port: int, data_dir: Path,
                  interval="1s", mqtt_extra="", dlt_meters=2, max_bytes="16MiB") -> Path:
    dlt = [("000000000001", "dlt645-three-phase"), ("000000000002", "dlt645-single-phase")][:dlt_meters]
    text = (
        f'gateway = "{GATEWAY}"\ndata_dir = "{data_dir}"\nevidence_frames = true\n\n'
        f'[mqtt]\nurl = "{url}"\ntopic_prefix = "{PREFIX}"\nreconnect_max = "4s"\nstatus_interval = "5s"\n{mqtt_extra}\n'
        f'[spool]\nmax_bytes = "{max_bytes}"\n\n'
        f'[[bus]]\nname = "dlt-pty"\ntransport = "serial"\nport = "{link}"\nbaud = 9600\nparity = "none"\n'
        f'timing = {{ response_timeout = "2s", retries = 1, turnaround = "5ms" }}\n'
    )
    for addr, profile in dlt:
        text += f'\n[[bus.meter]]\nprotocol = "dlt645-2007"\naddress = "{addr}"\nprofile = "{profile}"\ninterval = "{interval}"\n'
    text += f'\n[[bus]]\nname = "mtcp"\ntransport = "modbus-tcp"\nhost = "127.0.0.1:{modbus_port}"\n'
    for unit, mid, profile in ((1, "dtsu666-1", "chint-dtsu666"), (2, "sdm120-2", "eastron-sdm120")):
        text += f'\n[[bus.meter]]\nid = "{mid}"\nprotocol = "modbus-tcp"\nunit = {unit}\nprofile = "{profile}"\ninterval = "{interval}"\n'
    path = d / "meterd.toml"
    path.write_text(text)
    return path


METERS = ["000000000001", "000000000002", "dtsu666-1", "sdm120-2"]


class Rig:
    """Simulator + meterd (+ optionally a mosquitto and a subscriber) in one directory."""

    def __init__(self, meterd: Path, d: Path):
        self.bin = meterd
        self.d = d
        self.link = d / "ttySIM0"
        self.modbus_port = free_port()
        self.truth = d / "truth.jsonl"
        self.data_dir = d / "data"
        self.procs: list[Proc] = []
        self.sim = None
        self.daemon = None
        self.config = None
        self.brokers: list[Mosquitto] = []
        self.collectors: list[Collector] = []
        self.runs = 0

    def start_sim(self, dlt_meters=2):
        cfg = sim_config(self.d, self.link, self.modbus_port, dlt_meters=dlt_meters)
        self.sim = Proc([self.bin, "simulate", "--config", cfg, "--truth", self.truth], self.d, "sim")
        self.procs.append(self.sim)
        wait_for(lambda: "serving" in self.sim.text() or not self.sim.alive(), 20, "simulator start")
        assert self.sim.alive(), f"simulator died:\n{self.sim.text()}"
        assert self.link.exists(), f"no pty link {self.link}:\n{self.sim.text()}"
        wait_for(lambda: port_open(self.modbus_port), 10, "simulator modbus port")

    def write_config(self, url, **kw):
        self.config = meterd_config(self.d, url=url, link=self.link, modbus_port=self.modbus_port,
                                    data_dir=kw.pop("data_dir", self.data_dir), **kw)
        return self.config

    def start_daemon(self, env=None):
        self.runs += 1
        self.daemon = Proc([self.bin, "run", "--config", self.config], self.d, f"meterd-{self.runs}", env=env)
        self.procs.append(self.daemon)
        return self.daemon

    def broker(self, extra="", port=None) -> Mosquitto:
        d = self.d / f"mosquitto{len(self.brokers)}"
        d.mkdir()
        b = Mosquitto.__new__(Mosquitto)
        b.port = port or free_port()
        b.dir = d
        b.conf = d / "mosquitto.conf"
        b.extra = extra.replace("{dir}", str(d))
        b.proc = None
        b.start()
        self.brokers.append(b)
        return b

    def collector(self, port, **kw) -> Collector:
        c = Collector(port, **kw)
        self.collectors.append(c)
        return c

    def collector_auth(self, port, user, password) -> Collector:
        return self.collector(port, auth=(user, password))

    def truth_lines(self):
        if not self.truth.exists():
            return []
        out = []
        for line in self.truth.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def daemon_logs(self) -> str:
        return "".join(p.text() for p in self.procs if p.name.startswith("meterd-"))

    def close(self):
        for c in self.collectors:
            try:
                c.close()
            except Exception:
                pass
        for p in reversed(self.procs):
            p.stop()
        for b in self.brokers:
            b.stop(kill=True)


def spool_payload(encoding: int, stored: bytes, size: int) -> bytes:
    """A spool row's JSON: kept as it is (encoding 0) or as one LZ4 block (1), decoded here by
    the reference LZ4 library, not by meterd's."""
    if encoding == 0:
        return stored
    assert encoding == 1, f"unknown payload encoding {encoding}"
    json_bytes = lz4.block.decompress(stored, uncompressed_size=size)
    assert len(json_bytes) == size, (len(json_bytes), size)
    return json_bytes


def spool_state(data_dir: Path):
    """(last seq per meter, {meter: [pending reading seqs]}, [pending payloads: readings and
    freeze records]) read from the spool file after meterd stopped."""
    con = sqlite3.connect(f"file:{data_dir / 'spool.sqlite'}?mode=ro", uri=True)
    try:
        last = dict(con.execute("SELECT meter, last_seq FROM meters"))
        pending = defaultdict(list)
        payloads = []
        rows = con.execute("SELECT meter, seq, encoding, bytes, payload, kind FROM outbox ORDER BY row_id")
        for meter, seq, encoding, size, payload, kind in rows:
            if kind == 0:
                pending[meter].append(seq)
            payloads.append(spool_payload(encoding, bytes(payload), size))
        return last, dict(pending), payloads
    finally:
        con.close()


def check_schemas(collector: Collector):
    """Every message validates against its schema; returns counts per kind."""
    counts = defaultdict(int)
    for topic, payload, _ in collector.snapshot():
        doc = json.loads(payload)
        if topic.endswith("/readings"):
            kind = "reading"
        elif "/meters/" in topic and topic.endswith("/status"):
            kind = "meter-status"
        elif topic == f"{PREFIX}/{GATEWAY}/status":
            kind = "gateway-status"
        elif topic.endswith("/freezes"):
            kind = "freeze"
        elif "/meters/" in topic and topic.endswith("/events"):
            kind = "event"
        elif topic in (f"{PREFIX}/{GATEWAY}/completeness",
                       f"{PREFIX}/{GATEWAY}/completeness/monthly",
                       f"{PREFIX}/{GATEWAY}/completeness/hourly",
                       f"{PREFIX}/{GATEWAY}/completeness/load_profile"):
            kind = "completeness"
        elif topic.endswith("/command-results"):
            kind = "command-result"
        elif topic.endswith("/commands"):
            if not payload:
                continue  # a retained command being cleared
            kind = "command"
        else:
            raise AssertionError(f"unexpected topic {topic}")
        jsonschema.validate(doc, SCHEMAS[kind])
        counts[kind] += 1
    return counts


def check_sequence(readings, first_seq=None, last_seq=None, tolerate=()):
    """No gap per meter, duplicates only as byte-identical copies under the same id. Ids in
    `tolerate` may be missing (proven lost by the test broker, not by meterd).
    Returns {meter: sorted unique seqs}."""
    by_id: dict[str, bytes] = {}
    seqs = defaultdict(set)
    for raw, doc in readings:
        rid = doc["id"]
        assert rid == f"{doc['gateway']}/{doc['meter']}/{doc['seq']}", rid
        if rid in by_id:
            assert by_id[rid] == raw, f"duplicate {rid} with a different payload:\n{by_id[rid]!r}\n{raw!r}"
        by_id[rid] = raw
        seqs[doc["meter"]].add(doc["seq"])
    out = {}
    for meter, s in seqs.items():
        lo, hi = min(s), max(s)
        missing = sorted(q for q in set(range(lo, hi + 1)) - s if f"{GATEWAY}/{meter}/{q}" not in tolerate)
        assert not missing, f"{meter}: seq gap, missing {missing[:20]} (of {len(missing)}) in {lo}..{hi}"
        if first_seq and meter in first_seq:
            assert lo == first_seq[meter], f"{meter}: first seq {lo}, expected {first_seq[meter]}"
        if last_seq and meter in last_seq:
            assert hi == last_seq[meter], f"{meter}: last seq received {hi}, spool handed out {last_seq[meter]}"
        out[meter] = sorted(s)
    return out


def check_against_truth(readings, truth, extra_payloads=()):
    """Every published value equals the simulator's truth for its exchange, exactly (values
    matched by the evidence frame ↔ the truth line's `response`); every valid truth reply
    shows up as evidence in some batch or freeze record (published, or still in the spool:
    `extra_payloads`). A freeze record names its values without the snapshot suffix the truth
    log gives them (`energy.active.import.total` for `…@daily-3`). Returns how many values
    were compared."""
    by_response = {}
    for t in truth:
        by_response.setdefault(t["response"].upper(), t)
    seen_frames = set()
    compared = 0
    docs = [doc for _, doc in readings] + [json.loads(p, parse_float=decimal.Decimal) for p in extra_payloads]
    for doc in docs:
        truth_values = {}
        for frame in doc["frames"]:
            frame = frame.upper()
            if doc["protocol"] == "modbus-tcp":
                # meterd keeps the whole ADU; the truth log has the PDU after the MBAP header.
                mbap = bytes.fromhex(frame)
                assert int.from_bytes(mbap[4:6], "big") == len(mbap) - 6, f"{doc['id']}: MBAP length {frame}"
                frame = mbap[7:].hex(" ").upper()
            t = by_response.get(frame)
            assert t is not None, f"{doc['id']}: evidence frame {frame} is not a reply the simulator sent"
            seen_frames.add(frame)
            for v in t["values"]:
                q = v["quantity"]
                if doc.get("schema") == "meterd.freeze.v1":
                    q = q.split("@")[0]
                truth_values.setdefault(q, v)
        for v in doc["values"]:
            if v["quality"] == "bad":
                continue
            t = truth_values.get(v["quantity"])
            assert t is not None, f"{doc['id']}: {v['quantity']} has no truth in its frames"
            got = v["value"]
            # Exact: the published JSON number's text is the meter's digits (parsed here as a
            # Decimal, which keeps them), not only the same number.
            text = str(got) if not isinstance(got, str) else got
            want = t["value"]
            if " @ " in want:  # max demand: value and the meter's time stamp of it
                want, when = want.split(" @ ")
                assert str(v.get("meter_time", "")).startswith(when), (
                    f"{doc['id']}: {v['quantity']} meter_time {v.get('meter_time')!r}, the meter sent {when!r}")
            # The simulator logs the meter's unit (an SDM's W); meterd publishes the quantity's
            # unit (kW, docs/quantities.md): the same digits with the point moved.
            want = in_unit(want, t.get("unit", ""), v["unit"], v["source"])
            assert text == want, (
                f"{doc['id']}: {v['quantity']} published {got!r}, the meter sent {t['value']!r} {t.get('unit', '')} ({v['source']})")
            if isinstance(got, str):
                # Text items (status words, dates) are strings; numbers are never sent as strings.
                assert not _is_number(want), f"{doc['id']}: {v['quantity']} published as a string"
            compared += 1
    missing = [t for t in truth if t.get("valid", True) and t["response"].upper() not in seen_frames
               and not _event_or_clock_read(t["request"])]
    return compared, missing


def _event_or_clock_read(request_hex: str) -> bool:
    """Whether a DL/T 645-2007 request reads an event counter or record (03…) or the meter's
    clock (04000101/04000102): the event collector's reads, which become a message only when
    they find an event (a counter that did not move, a clock in time, publish nothing)."""
    b = bytes.fromhex(request_hex)
    while b[:1] == b"\xfe":
        b = b[1:]
    if len(b) < 14 or b[0] != 0x68 or b[8] != 0x11:
        return False
    di = [(x - 0x33) & 0xFF for x in b[10:14]]  # DI0..DI3
    return di[3] == 0x03 or (di[3], di[2], di[1]) == (0x04, 0x00, 0x01) and di[0] in (1, 2)


_SI = {"": 0, "m": -3, "k": 3, "M": 6, "G": 9}
_BASES = ("W", "var", "VA", "Wh", "varh", "VAh", "V", "A", "Hz")


def _unit_power(unit: str):
    for prefix, power in _SI.items():
        base = unit[len(prefix):] if unit.startswith(prefix) else None
        if base in _BASES:
            return power, base
    return None


def in_unit(text: str, meter_unit: str, published_unit: str, source: str) -> str:
    """`text` (a value in the meter's unit) in the published unit, computed exactly with
    Decimal: the point moves by the SI prefixes' difference; a float's trailing zeros are
    dropped (its shortest digits stay the shortest), an exact decimal keeps them."""
    if meter_unit == published_unit or not _is_number(text):
        return text
    a, b = _unit_power(meter_unit), _unit_power(published_unit)
    assert a and b and a[1] == b[1], f"{meter_unit} cannot be published as {published_unit}"
    out = format(decimal.Decimal(text).scaleb(a[0] - b[0]), "f")
    if (":f32:" in source or ":f64:" in source) and "." in out:
        out = out.rstrip("0").rstrip(".")
    return out


def _is_number(text: str) -> bool:
    try:
        decimal.Decimal(text)
        return True
    except decimal.InvalidOperation:
        return False
