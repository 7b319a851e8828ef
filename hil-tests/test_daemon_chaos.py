"""Issue 14: chaos soak. `meterd run` polls `meterd simulate` on four buses and publishes to a
real mosquitto while, at random moments from a fixed seed, the test

- SIGKILLs mosquitto and restarts it on the same port after a random pause,
- cuts a meter link: SIGKILLs the socat bridge that is the DL/T 645 bus's "serial port" (the pty
  vanishes, as an unplugged USB adapter) or drops the TCP forwarder of the Modbus RTU serial
  server or of the Modbus TCP meter (connects refused), and restores it after a random pause,
- `kill -9`s meterd and restarts it on the same spool (only in the first half of the run, so
  the last process lives long enough for the memory check),
- steps meterd's wall clock forward and backward (libfaketime's timestamp file; CLOCK_MONOTONIC
  is not faked),

while one meter is noisy (noise bytes and corrupt replies), one is dead (`no_reply`), one is
configured but missing from the simulator, and a client hammers the diagnostics service
(`POST /api/read` and `GET /api/status` in a loop).

5 minutes by default; `--long` (or `METERD_CHAOS_SECONDS=3600`) for the hour. The seed is printed at the start;
`METERD_CHAOS_SEED=N` replays the same fault schedule (kinds, moments, pauses, clock offsets:
the moments are the same, the interleaving with meterd's own timing is not).

After the faults stop (broker and links up) the backlog drains, then the invariants are checked,
one test each, on that one run:

1. no per-meter `seq` gap that is not a counted drop (the spool's durable per-meter counter
   `meters.dropped_batches`, which the gateway status publishes summed as `spool.dropped`);
   readings a SIGKILLed broker lost after its PUBACK are the broker's (proven by the MQTT tap),
2. every reply the simulator's truth log says it sent is in a delivered batch (or in a one-shot
   read's answer), except the poll a `kill -9` or a link cut interrupted, and duplicate answers
   to a retried request,
3. per good meter, every scheduled poll in its slot: consecutive polls begin in consecutive
   slots of meterd's wall clock (poll start = host time of the first request's first attempt,
   from the truth log, plus the clock offset in force; `read_at` is stamped when a poll ends and
   includes its retries), outside the windows where meterd was dead or its clock had just been
   stepped,
3b. polls continue after a backward clock step (first reading within 2 intervals): the
   scheduler drives slots by monotonic time, so this and the narrow windows of check 3 are
   strict (`METERD_CHAOS_STRICT_CLOCK=0` relaxes both, to compare a build from before that fix),
4. VmRSS of the last meterd process at the end within 10 % of its RSS after warm-up.
"""
from __future__ import annotations

import decimal
import json
import os
import random
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from chaos_parts import FakeClock, LinkProxy, PtyBridge, faketime_lib, have, rss_parts_kib, vm_rss_kib
from conftest import free_port, port_open, wait_for
from daemon_rig import GATEWAY, PREFIX, Proc, Rig, check_schemas, quiet_port, require_parts, spool_state
from mqtt_tap import MqttTap

SECONDS = int(os.environ.get("METERD_CHAOS_SECONDS", "300"))
LONG = SECONDS > 900
SEED = int(os.environ.get("METERD_CHAOS_SEED") or random.randrange(1 << 31))
# Strict (the default, since the scheduler drives slots by monotonic time): a step's window in
# check 3 is 3 intervals after it (seen at the next wake, then realigned), and check 3b must pass. METERD_CHAOS_STRICT_CLOCK=0 gives
# the old leniency ("until the stepped clock is back where it was, plus the bus task's 60 s
# sleep", 3b xfail) for comparing a build from before that fix.
STRICT_CLOCK = os.environ.get("METERD_CHAOS_STRICT_CLOCK", "1") == "1"
# 3 s slots: long enough that a noisy meter's corrupt replies (each costs a response timeout)
# plus a one-shot read fit in a slot on a loaded CI machine, short enough for ~100 polls per
# meter in 5 minutes.
INTERVAL_S = 3.0
# Mean time between two injected faults; pauses before a restore.
MEAN_GAP_S = 8.0
BROKER_PAUSE_S = (1.0, 45.0 if LONG else 15.0)
LINK_PAUSE_S = (1.0, 30.0 if LONG else 15.0)
MEMORY_PAUSE = (0.0, 3.0)
# kill -9 only in the first half: the last process must run long enough for the RSS check.
KILL_UNTIL = 0.5
# The hour's warm-up is 15 min: a release build's resident set (12-13 MB) keeps growing for
# ~12 min under the hammer and broker kills before it levels off (SQLite's page cache filling,
# code paths faulted in again after startup_code::release, the heap's working set): in a
# steady run (2026-12-07, release build, the chaos daemon config, a client looping one-shot reads
# and status GETs, mosquitto SIGKILLed every 50 s) VmRSS went 11.4 → 13.2 MB by 12 min, then
# +8 KiB in the next 6 min; heaptrack in the same run: live heap 995 KiB at 4 min, 940 KiB at
# 10 min, no allocation site growing (docs/benchmarks.md, "Chaos soak"). 120 s measured
# the warm-up itself (12.7 → 14.4 MB, +13 %, in the hour at 2d50fd1). The last process runs at
# least half the hour (kills only in the first half), so 15 min leave 15 to judge.
WARMUP_S = 900.0 if LONG else 30.0
# A kill (or a link cut) loses the poll in progress and the one waiting for its group commit.
INTERRUPT_WINDOW_S = 5.0
NOISE_BYTES = 4
# Between two rounds of the diagnostics client. Each one-shot read takes its bus for a whole
# poll, before the scheduled polls; back to back they would overload the noisy bus (a corrupt
# reply costs a response timeout) and push its meters out of their slots by design.
HAMMER_PAUSE_S = 0.3
# Today's bus task sleeps up to 60 s (monotonic) while nothing is due: after a backward step a
# later forward step does not wake it (only a one-shot read does).
BUS_SLEEP_CAP_S = 60.0
# Without METERD_CHAOS_STRICT_CLOCK, backward steps never put meterd's clock more than this
# behind the furthest it has been (a random walk of steps would otherwise stall polling for
# most of the run; see step_clock).
MAX_BEHIND_S = 60.0

pytestmark = pytest.mark.timeout(SECONDS + 900)

GOOD = ["dlt-1", "dlt-noisy", "rtu-1", "mtcp-1"]
DEAD = ["rtu-dead", "dlt-ghost"]
BUS_OF = {"dlt-1": "dlt", "dlt-noisy": "dlt", "rtu-1": "rtu", "rtu-dead": "rtu", "mtcp-1": "mtcp",
          "dlt-ghost": "ghost"}
# The longest a poll whose first request gets no reply can take: response timeout × attempts
# (DAEMON below), plus a little.
FAIL_COST_S = {"dlt": 2 * 0.5 + 0.2, "rtu": 2 * 0.3 + 0.2, "mtcp": 2 * 1.0 + 0.2, "ghost": 0.5}
# Between two attempts of one request: a response timeout, the retry's turnaround, the wire.
RETRY_SPAN_S = 1.5
# Simulator port -> the bus whose link carries it.
SIM_PORT_BUS = {"dlt": "dlt", "rtu": "rtu", "mtcp": "mtcp"}

BROKER = ("persistence true\npersistence_location {dir}/\nautosave_interval 1\n"
          "max_queued_messages 0\nmax_inflight_messages 20\n")

SIM = """
[clock]
speed = 1.0

[[port]]
name = "dlt"
tcp = "127.0.0.1:{dlt}"
baud = 9600
parity = "none"
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
faults = {{ noise = {{ every = 3, bytes = {noise} }}, corrupt = {{ probability = 0.03 }} }}

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

[[port]]
name = "mtcp"
modbus_tcp = "127.0.0.1:{mtcp}"

[[port.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "chint-dtsu666"
seed = 21
"""

DAEMON = """
gateway = "{gateway}"
data_dir = "{data}"
evidence_frames = true

[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
topic_prefix = "{prefix}"
reconnect_max = "4s"
status_interval = "5s"

[spool]
max_bytes = "64MiB"

[service]
listen = "127.0.0.1:{service}"

[[bus]]
name = "dlt"
transport = "serial"
port = "{pty}"
baud = 9600
parity = "none"
timing = {{ response_timeout = "500ms", retries = 1, turnaround = "5ms" }}

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
timing = {{ response_timeout = "300ms", retries = 1, turnaround = "5ms" }}

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
# Its probe comes first in its slot (least recently read); short, so rtu-1 keeps its slot.
timing = {{ response_timeout = "150ms", retries = 0 }}

[[bus]]
name = "mtcp"
transport = "modbus-tcp"
host = "127.0.0.1:{mtcp}"
timing = {{ response_timeout = "1s", retries = 1 }}

[[bus.meter]]
id = "mtcp-1"
protocol = "modbus-tcp"
unit = 1
profile = "chint-dtsu666"
interval = "{interval}s"

# A meter in the file that is not on the line (its own bus: a dead DL/T 645 meter costs a
# whole poll of timeouts, which would push the good meters of a shared bus out of their slots).
[[bus]]
name = "ghost"
transport = "tcp"
host = "127.0.0.1:{dlt_direct}"
baud = 9600
timing = {{ response_timeout = "300ms", retries = 0, turnaround = "5ms" }}

[[bus.meter]]
id = "dlt-ghost"
protocol = "dlt645-2007"
address = "000000000009"
profile = "dlt645-single-phase"
interval = "{interval}s"
"""


def http(url, method="GET", body=None, timeout=60.0):
    req = urllib.request.Request(url, method=method, data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def frame_key(frame: str, protocol: str) -> str:
    """An evidence frame as the truth log writes the reply: Modbus TCP without its MBAP header."""
    frame = frame.upper()
    if protocol == "modbus-tcp":
        adu = bytes.fromhex(frame)
        return adu[7:].hex(" ").upper()
    return frame


def truth_key(line: dict) -> str:
    """The reply bytes a reader can take as the meter's frame: without the noise in front."""
    parts = line["response"].upper().split()
    if "noise" in line.get("faults", []):
        parts = parts[NOISE_BYTES:]
    return " ".join(parts)


def dropped_fields(doc, prefix="") -> dict:
    """Every numeric field whose name says `dropped`, anywhere in a status document."""
    out = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            name = f"{prefix}.{k}" if prefix else k
            if "dropped" in k and isinstance(v, (int, float)):
                out[name] = v
            else:
                out.update(dropped_fields(v, name))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(dropped_fields(v, f"{prefix}[{i}]"))
    return out


def poll_until(predicate, timeout, what, every=0.5):
    """conftest.wait_for at a slower pace: these predicates look at every reading so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


class ParsedReadings:
    """The subscriber's reading messages, each parsed once (the hour's ~20,000 would otherwise
    be parsed again on every look during the drain)."""

    def __init__(self, sub):
        self.sub = sub
        self.seen = 0
        self.docs: list[dict] = []

    def update(self) -> list[dict]:
        messages = self.sub.snapshot()
        for topic, payload, _ in messages[self.seen:]:
            if topic.endswith("/readings"):
                self.docs.append(json.loads(payload))
        self.seen = len(messages)
        return self.docs


@dataclass
class Window:
    start: float
    end: float
    why: str


@dataclass
class ChaosRun:
    bin: Path
    d: Path
    rng: random.Random = field(init=False)
    faults: Counter = field(default_factory=Counter)
    kills: list = field(default_factory=list)          # (kill time, restart time)
    crashes: list = field(default_factory=list)        # (time, log tail): exits nobody asked for
    cuts: list = field(default_factory=list)           # (bus, cut time, restore time or None)
    broker_outages: list = field(default_factory=list)  # (kill time, restart time or None)
    steps: list = field(default_factory=list)          # (time, old offset, new offset)
    rss: list = field(default_factory=list)            # (time, run number, VmRSS KiB)
    rss_parts: list = field(default_factory=list)      # (time, run number, smaps_rollup split), 1/min
    oneshot: Counter = field(default_factory=Counter)
    oneshot_frames: set = field(default_factory=set)
    oneshot_failed: list = field(default_factory=list)  # (meter, start, end, why)
    acked_at_kills: set = field(default_factory=set)
    events: list = field(default_factory=list)         # (time, text) for the log
    report: dict = field(default_factory=dict)

    def __post_init__(self):
        self.rng = random.Random(SEED)
        self.rig = Rig(self.bin, self.d)
        self.lock = threading.Lock()
        self.stop_hammer = threading.Event()
        self.stop_sampler = threading.Event()
        self.daemon: Proc | None = None
        self.t0 = time.time()

    # -- parts ---------------------------------------------------------------------------
    def note(self, text):
        t = time.time()
        self.events.append((t, text))
        print(f"[chaos {t - self.t0:7.1f}s] {text}", flush=True)

    def start(self):
        lib = faketime_lib()
        if lib is None:
            msg = "libfaketime missing: run hil-tests/setup (apt-get install faketime)"
            if require_parts():
                pytest.fail(msg)
            pytest.skip(msg)
        if not have("socat"):
            pytest.fail("socat missing: run hil-tests/setup")
        self.note(f"seed {SEED} (replay: METERD_CHAOS_SEED={SEED}), {SECONDS} s of faults, dir {self.d}")
        self.broker = self.rig.broker(BROKER, port=quiet_port())
        self.tap = MqttTap(self.broker.port, quiet_port())
        self.sub = self.rig.collector(self.broker.port)
        self.parsed = ParsedReadings(self.sub)
        time.sleep(3)  # the subscriber's session is on disk before the first broker kill
        ports = {"dlt": free_port(), "rtu": free_port(), "mtcp": free_port()}
        (self.d / "sim.toml").write_text(SIM.format(noise=NOISE_BYTES, **ports))
        self.rig.sim = Proc([self.bin, "simulate", "--config", self.d / "sim.toml", "--truth", self.rig.truth],
                            self.d, "sim")
        self.rig.procs.append(self.rig.sim)
        wait_for(lambda: all(port_open(p) for p in ports.values()) or not self.rig.sim.alive(), 20, "simulator")
        assert self.rig.sim.alive(), self.rig.sim.text()
        self.links = {
            "dlt": PtyBridge(self.d / "ttyCHAOS", ports["dlt"], self.d),
            "rtu": LinkProxy(ports["rtu"], quiet_port()),
            "mtcp": LinkProxy(ports["mtcp"], quiet_port()),
        }
        self.service = quiet_port()
        self.url = f"http://127.0.0.1:{self.service}"
        self.rig.data_dir.mkdir()
        self.rig.config = self.d / "meterd.toml"
        self.rig.config.write_text(DAEMON.format(
            gateway=GATEWAY, prefix=PREFIX, data=self.rig.data_dir, mqtt=self.tap.port, service=self.service,
            pty=self.links["dlt"].link, rtu=self.links["rtu"].port, mtcp=self.links["mtcp"].port,
            dlt_direct=ports["dlt"], interval=int(INTERVAL_S)))
        self.clock = FakeClock(self.d, lib)
        self.start_daemon()
        wait_for(lambda: {doc["meter"] for _, doc in self.sub.readings()} >= set(GOOD), 90, "first readings")
        self.hammer_thread = threading.Thread(target=self.hammer, daemon=True)
        self.hammer_thread.start()
        self.sampler_thread = threading.Thread(target=self.sampler, daemon=True)
        self.sampler_thread.start()

    def start_daemon(self):
        self.daemon = self.rig.start_daemon(env=dict(os.environ, **self.clock.env()))
        self.daemon_started = time.time()
        wait_for(lambda: port_open(self.service) or not self.daemon.alive(), 30, "diagnostics service")

    def hammer(self):
        """A technician's tool that never stops: a one-shot read of a random good meter, then
        the status, again and again (HAMMER_PAUSE_S apart)."""
        rnd = random.Random(SEED + 1)
        while not self.stop_hammer.is_set():
            meter = rnd.choice(GOOD)
            started = time.time()
            try:
                code, text = http(self.url + "/api/read", "POST", json.dumps({"meter": meter}).encode())
                if code == 200:
                    batch = json.loads(text)
                    with self.lock:
                        self.oneshot["read_ok"] += 1
                        for f in batch.get("frames", []):
                            self.oneshot_frames.add(frame_key(f, batch["protocol"]))
                else:
                    with self.lock:
                        self.oneshot[f"read_http_{code}"] += 1
                        self.oneshot_failed.append((meter, started, time.time(), f"HTTP {code}"))
                code, _ = http(self.url + "/api/status")
                with self.lock:
                    self.oneshot["status_ok" if code == 200 else f"status_http_{code}"] += 1
            except (OSError, ValueError) as e:
                with self.lock:
                    self.oneshot["unreachable"] += 1
                    self.oneshot_failed.append((meter, started, time.time(), str(e)))
                time.sleep(0.2)
            time.sleep(HAMMER_PAUSE_S)

    def sampler(self):
        while not self.stop_sampler.is_set():
            d = self.daemon
            if d is not None and d.alive():
                kib = vm_rss_kib(d.pid)
                if kib:
                    self.rss.append((time.time(), self.rig.runs, kib))
                    parts = rss_parts_kib(d.pid)
                    if parts and (not self.rss_parts or self.rss_parts[-1][1] != self.rig.runs
                                  or time.time() - self.rss_parts[-1][0] >= 60):
                        self.rss_parts.append((time.time(), self.rig.runs, parts))
            time.sleep(2)

    # -- faults --------------------------------------------------------------------------
    def kill_broker(self, pending):
        if self.broker.proc is None:
            return False
        self.broker.stop(kill=True)
        try:
            self.tap.wait_closed()
        except TimeoutError:
            pass
        self.acked_at_kills |= self.tap.acked_ids()
        pause = self.rng.uniform(*BROKER_PAUSE_S)
        outage = [time.time(), None]
        self.broker_outages.append(outage)
        self.faults["broker SIGKILL"] += 1
        self.note(f"mosquitto SIGKILLed for {pause:.1f} s")

        def restore():
            self.broker.start()
            outage[1] = time.time()
            self.note("mosquitto restarted")
        pending.append((time.monotonic() + pause, restore))
        return True

    def cut_link(self, pending, bus=None):
        up = [b for b, link in self.links.items() if link.is_up]
        if bus is None:
            if not up:
                return False
            bus = self.rng.choice(sorted(up))
        elif bus not in up:
            return False
        link = self.links[bus]
        link.cut()
        pause = self.rng.uniform(*LINK_PAUSE_S)
        cut = [bus, time.time(), None]
        self.cuts.append(cut)
        kind = "socat pty bridge SIGKILL" if bus == "dlt" else f"TCP link cut ({bus})"
        self.faults[kind] += 1
        self.note(f"{kind} for {pause:.1f} s")

        def restore():
            link.restore()
            cut[2] = time.time()
            self.note(f"link {bus} restored")
        pending.append((time.monotonic() + pause, restore))
        return True

    def kill_meterd(self):
        if time.time() - self.chaos_start > KILL_UNTIL * SECONDS:
            return False
        self.daemon.signal(signal.SIGKILL)
        killed = time.time()
        self.daemon.wait(10)
        pause = self.rng.uniform(*MEMORY_PAUSE)
        self.faults["meterd kill -9"] += 1
        self.note(f"meterd kill -9, restart after {pause:.1f} s")
        time.sleep(pause)
        self.start_daemon()
        self.kills.append((killed, self.daemon_started))
        return True

    def step_clock(self, direction=None):
        direction = direction or self.rng.choice(["+", "-"])
        # How far meterd's clock is behind the furthest it has been: today's scheduler stalls
        # until it is back there.
        behind = max(t + o for t, o in self.clock.timeline) - self.clock.offset - time.time()
        room = MAX_BEHIND_S - max(0.0, behind)
        if direction == "-" and not STRICT_CLOCK and room < 5:
            direction = "+"
        if direction == "+":
            size = 3600 if self.rng.random() < 0.3 else self.rng.randint(5, 120)
        elif STRICT_CLOCK:
            size = 3600 if self.rng.random() < 0.3 else self.rng.randint(5, 120)
        else:
            # Today a backward step stalls every bus for its own length (the scheduler waits
            # for the wall clock to come back to its planned slot): a -1 h step would leave the
            # other checks an hour without polls, so backward steps stay short until the fix,
            # and in all at most MAX_BEHIND_S behind the furthest the clock has been.
            size = self.rng.randint(5, int(min(60, room)))
        old = self.clock.offset
        new = old + size if direction == "+" else old - size
        self.clock.set(new)
        self.steps.append((time.time(), old, new))
        self.faults["clock step " + ("forward" if new > old else "backward")] += 1
        self.note(f"meterd's clock stepped {new - old:+d} s (offset now {new:+d} s)")
        return True

    def check_processes(self):
        if not self.daemon.alive():
            code = self.daemon.p.returncode
            tail = self.daemon.text()[-3000:]
            self.crashes.append((time.time(), code, tail))
            self.note(f"meterd exited by itself (code {code}); restarting. Log tail:\n{tail}")
            died = time.time()
            self.start_daemon()
            self.kills.append((died, self.daemon_started))
        self.links["dlt"].check()

    def run(self):
        self.chaos_start = time.time()
        end = self.chaos_start + SECONDS
        pending: list = []
        # The first round injects every kind once (in random order); then kinds are drawn.
        first = ["broker", "link:dlt", "link:rtu", "link:mtcp", "meterd", "clock:+", "clock:-"]
        self.rng.shuffle(first)
        weights = {"broker": 0.25, "link": 0.3, "meterd": 0.15, "clock": 0.3}
        next_at = time.monotonic() + self.rng.expovariate(1 / MEAN_GAP_S)
        while time.time() < end:
            now = time.monotonic()
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                item[1]()
            self.check_processes()
            if now >= next_at:
                kind = first.pop(0) if first else self.rng.choices(list(weights), list(weights.values()))[0]
                if kind == "broker":
                    self.kill_broker(pending)
                elif kind.startswith("link"):
                    self.cut_link(pending, kind.split(":")[1] if ":" in kind else None)
                elif kind == "meterd":
                    self.kill_meterd()
                elif kind.startswith("clock"):
                    self.step_clock(kind.split(":")[1] if ":" in kind else None)
                next_at = time.monotonic() + self.rng.expovariate(1 / MEAN_GAP_S)
            time.sleep(0.1)
        self.chaos_end = time.time()
        # Faults stop: every restore now.
        for _, restore in sorted(pending, key=lambda p: p[0]):
            restore()
        self.check_processes()
        # Today's scheduler waits for the wall clock to reach slots computed before a backward
        # step; a last forward step to the highest offset used lets it go on (a no-op when the
        # offset is already the highest).
        top = max(o for _, o in self.clock.timeline)
        if self.clock.offset < top:
            old = self.clock.offset
            self.clock.set(top)
            self.steps.append((time.time(), old, top))
            self.note(f"end of faults: meterd's clock back to its highest offset {top:+d} s")
        self.stop_hammer.set()
        self.hammer_thread.join(90)
        self.note("faults stopped; draining")
        # Polls resume on every good meter (after a backward step only once the bus task's
        # capped sleep ends, see BUS_SLEEP_CAP_S).
        resumed = time.time()
        since = self.clock.timeline[-1][1] + resumed

        def fresh():
            seen = {doc["meter"] for doc in self.parsed.update() if ts(doc["read_at"]) > since}
            return seen >= set(GOOD)
        try:
            poll_until(fresh, BUS_SLEEP_CAP_S + 30, "a reading of every good meter after the faults")
        except TimeoutError:
            self.note("not every good meter was read again after the faults")
        self.resume_s = time.time() - resumed

    # -- drain and collect -----------------------------------------------------------------
    def status(self):
        code, text = http(self.url + "/api/status", timeout=30)
        assert code == 200, text
        return json.loads(text)

    def drained(self):
        acked = self.tap.acked_ids()
        docs = self.parsed.update()
        if acked - {doc["id"] for doc in docs} - self.acked_at_kills:
            return False
        seqs = defaultdict(set)
        for doc in docs:
            seqs[doc["meter"]].add(doc["seq"])
        for m, have_ in seqs.items():
            gaps = set(range(min(have_), max(have_) + 1)) - have_
            if any(f"{GATEWAY}/{m}/{q}" not in self.acked_at_kills for q in gaps):
                return False
        try:
            s = self.status()
        except (OSError, AssertionError, ValueError):
            return False
        # Polling goes on: the latest few readings may be on their way.
        return s["gateway"]["spool"]["depth"] <= len(BUS_OF) and s["gateway"]["uplink"]["in_flight"] <= len(BUS_OF)

    def finish(self):
        drain_start = time.time()
        try:
            poll_until(self.drained, 240, "the backlog to drain")
        except TimeoutError:
            self.note("backlog did not drain within 240 s (the checks say what is missing)")
        self.drain_s = time.time() - drain_start
        time.sleep(2 * INTERVAL_S)
        self.final_rss = vm_rss_kib(self.daemon.pid)
        self.final_status = self.status()
        (self.d / "chaos-final-status.json").write_text(json.dumps(self.final_status, indent=1))
        self.stop_sampler.set()
        self.daemon.signal(signal.SIGTERM)
        self.exit_code = self.daemon.wait(15)
        self.rig.sim.stop()
        time.sleep(2)  # last deliveries to the subscriber

    def close(self):
        self.stop_hammer.set()
        self.stop_sampler.set()
        for link in getattr(self, "links", {}).values():
            link.close()
        if hasattr(self, "tap"):
            self.tap.close()
        self.rig.close()


@pytest.fixture(scope="module")
def chaos(meterd, tmp_path_factory):
    run = ChaosRun(meterd, tmp_path_factory.mktemp("chaos"))
    try:
        run.start()
        run.run()
        run.finish()
        analyse(run)
        yield run
    finally:
        run.close()


# -- analysis -------------------------------------------------------------------------------

def analyse(run: ChaosRun):
    """Everything the checks need, computed once; the figures are printed and written to
    chaos-report.json (and to $METERD_CHAOS_REPORT when set)."""
    readings = run.sub.readings()
    acked, published = run.tap.acked_ids(), run.tap.published_ids()
    last, pending, payloads = spool_state(run.rig.data_dir)
    con = sqlite3.connect(f"file:{run.rig.data_dir / 'spool.sqlite'}?mode=ro", uri=True)
    try:
        spool_dropped = dict(con.execute("SELECT meter, dropped_batches FROM meters"))
    finally:
        con.close()
    docs: dict[str, dict] = {}
    raw_by_id: dict[str, bytes] = {}
    duplicate_mismatch = []
    for raw, doc in readings:
        if doc["id"] in raw_by_id and raw_by_id[doc["id"]] != raw:
            duplicate_mismatch.append(doc["id"])
        raw_by_id[doc["id"]] = raw
        docs[doc["id"]] = doc
    delivered_ids = set(docs)
    # Gaps the SIGKILLed broker made after its PUBACK: the tap kept what meterd published.
    broker_lost = []
    have = defaultdict(set)
    for doc in docs.values():
        have[doc["meter"]].add(doc["seq"])
    for meter, seqs in have.items():
        for seq in set(range(min(seqs), max(seqs) + 1)) - seqs:
            rid = f"{GATEWAY}/{meter}/{seq}"
            if rid in acked and run.tap.payload(rid) is not None:
                broker_lost.append(rid)
                docs[rid] = json.loads(run.tap.payload(rid), parse_float=decimal.Decimal)
    for p in payloads:  # still in the spool (should be none after the drain)
        doc = json.loads(p, parse_float=decimal.Decimal)
        docs.setdefault(doc["id"], doc)
    by_meter = defaultdict(dict)
    for doc in docs.values():
        by_meter[doc["meter"]][doc["seq"]] = doc

    # 1. seq gaps vs counted drops.
    seq_problems = []
    gaps_total = 0
    for meter, seqs in sorted(by_meter.items()):
        lo, hi = min(seqs), max(seqs)
        missing = sorted(set(range(lo, hi + 1)) - set(seqs))
        gaps_total += len(missing)
        counted = spool_dropped.get(meter, 0)
        if len(missing) > counted:
            seq_problems.append(f"{meter}: {len(missing)} seqs missing (e.g. {missing[:10]}) in {lo}..{hi}, "
                                f"only {counted} counted dropped (spool meters.dropped_batches)")
        if last.get(meter) is not None and hi != last[meter]:
            seq_problems.append(f"{meter}: last seq delivered {hi}, the spool handed out {last[meter]}")

    # 2. truth replies delivered, and nothing delivered that the simulator did not send.
    delivered_frames = set(run.oneshot_frames)
    for doc in docs.values():
        for f in doc["frames"]:
            delivered_frames.add(frame_key(f, doc["protocol"]))
    truth = run.rig.truth_lines()
    sent_frames = {truth_key(t) for t in truth}
    foreign = sorted(f"{doc['id']}: {f[:48]}" for doc in docs.values() for f in doc["frames"]
                     if frame_key(f, doc["protocol"]) not in sent_frames)
    missing_by_kind = Counter()
    unexplained = []
    kill_times = [k for k, _ in run.kills]
    by_meter_request = defaultdict(list)
    for t in truth:
        t["_t"] = ts(t["time"])
        t["_key"] = truth_key(t)
        by_meter_request[(t["meter"], t["request"])].append(t)
    valid = [t for t in truth if t.get("valid", True)]
    for t in valid:
        if t["_key"] in delivered_frames:
            continue
        sent = t["_t"]
        bus = SIM_PORT_BUS.get(t["port"])
        if any(0 <= k - sent <= INTERRUPT_WINDOW_S for k in kill_times):
            missing_by_kind["poll interrupted by kill -9"] += 1
        elif any(b == bus and 0 <= c - sent <= INTERRUPT_WINDOW_S for b, c, _ in run.cuts):
            missing_by_kind["poll interrupted by a link cut"] += 1
        elif any(o is not t and o["_key"] in delivered_frames and abs(o["_t"] - sent) <= 5
                 for o in by_meter_request[(t["meter"], t["request"])]):
            missing_by_kind["second answer to a retried request"] += 1
        elif any(a - 1 <= sent <= b + 1 and BUS_OF.get(m_) == bus for m_, a, b, _ in run.oneshot_failed):
            missing_by_kind["one-shot read that failed"] += 1
        else:
            unexplained.append(t)

    # 3. poll gaps, in host time.
    windows: list[Window] = []
    for killed, restarted in run.kills:
        windows.append(Window(killed - INTERVAL_S, restarted + 2 * INTERVAL_S, "meterd dead"))
    restarts = sorted(r for _, r in run.kills)
    for at, old, new in run.steps:
        if new >= old or STRICT_CLOCK:
            # A bus sees the step when it next wakes (up to one interval later) and its next
            # slot is then on the new time's boundaries (up to one more interval): one gap of up
            # to two intervals within three intervals of the step is the designed realignment,
            # not a late poll (the hour at 4238b6d had one such gap 6.1 s after a -31 s step).
            windows.append(Window(at - INTERVAL_S, at + 3 * INTERVAL_S, f"clock step {new - old:+d}"))
        else:
            # A stall ended by a forward step (or a restart) is noticed only when the bus task's
            # sleep ends (at most 60 s, never longer than the stall); one that ends because the
            # stepped clock caught up ends with that sleep.
            end, by_step = stall_end(run, at)
            extra = min(BUS_SLEEP_CAP_S, end - at) if by_step else 0.0
            windows.append(Window(at - INTERVAL_S, end + extra + 2 * INTERVAL_S,
                                  f"backward step {new - old:+d} (wall-clock scheduler stall)"))
    gap_problems = []
    max_gap = {}
    max_end_gap = {}
    latest_in_slot = {}
    unknown = 0
    checked = excluded = 0
    real = {}
    for meter in GOOD:
        real[meter] = host_times(run.clock, by_meter.get(meter, {}))
    starts = poll_starts(truth, delivered_frames, by_meter, real)
    for meter in GOOD:
        seqs = by_meter.get(meter, {})
        worst = worst_end = 0.0
        for s in sorted(seqs):
            if s + 1 not in seqs:
                continue
            a, b = starts[meter].get(s), starts[meter].get(s + 1)
            if a is None or b is None:
                unknown += 1
                continue
            # A poll without a reply has no start in the truth log: it began between its end
            # minus the time its failed attempts can take and its end; take the bound that
            # makes each gap shortest (lenient by at most that time, on those pairs only).
            a, b = a[1], b[0]
            if any(w.start < b and a < w.end for w in windows):
                excluded += 1
                continue
            checked += 1
            gap = b - a
            worst = max(worst, gap)
            worst_end = max(worst_end, real[meter][s + 1] - real[meter][s])
            # On time = in its slot: slots are the interval's multiples of meterd's (stepped)
            # wall clock; two consecutive polls must be in consecutive slots. Where in its
            # slot a poll begins depends on the other meters of its bus (the noisy meter's
            # retries come first in some slots), which is not lateness.
            slot_a = int((a + run.clock.offset_at(a)) // INTERVAL_S)
            slot_b = int((b + run.clock.offset_at(b)) // INTERVAL_S)
            into = (b + run.clock.offset_at(b)) % INTERVAL_S
            latest_in_slot[meter] = max(latest_in_slot.get(meter, 0.0), into)
            if slot_b - slot_a > 1:
                near = [f"{t - a:+.1f}s {text}" for t, text in run.events if -15 <= t - a <= 15]
                gap_problems.append(f"{meter}: seq {s}->{s + 1} polls began {gap:.2f} s apart, "
                                    f"{slot_b - slot_a - 1} slot(s) without a poll "
                                    f"(read_at {seqs[s]['read_at']} -> {seqs[s + 1]['read_at']}, "
                                    f"host {time.strftime('%H:%M:%S', time.gmtime(a))}Z, "
                                    f"t={a - run.t0:.1f}s; faults within 15 s: {near or 'none'})")
        max_gap[meter] = round(worst, 2)
        max_end_gap[meter] = round(worst_end, 2)

    # 3b. polls go on after a backward step.
    stall_checks = []
    for at, old, new in run.steps:
        if new >= old:
            continue
        horizon = at + 2 * INTERVAL_S + 1
        others = [s for s, _, _ in run.steps if at < s <= horizon]
        if others or any(k <= horizon and r >= at for k, r in run.kills) or horizon > run.chaos_end:
            continue
        for meter in GOOD:
            after = list(real[meter].values())
            # A poll that began before the step is stamped when it ends, after it: skip 1 s.
            after = sorted(x for x in after if x is not None and x > at + 1.0)
            first = after[0] - at if after else None
            stall_checks.append((at, new - old, meter, first))

    # 4. RSS.
    final_run = run.rig.runs
    samples = [(t, kib) for t, r, kib in run.rss if r == final_run]
    warm = next((kib for t, kib in samples if t >= run.daemon_started + WARMUP_S), None)

    logs = run.rig.daemon_logs()
    run.report = {
        "seed": SEED,
        "fault_seconds": SECONDS,
        "wall_seconds": round(time.time() - run.t0, 1),
        "drain_seconds": round(run.drain_s, 1),
        "polls_resumed_after_faults_s": round(run.resume_s, 1),
        "interval_s": INTERVAL_S,
        "faults": dict(sorted(run.faults.items())),
        "meterd_runs": run.rig.runs,
        "unexpected_exits": len(run.crashes),
        "socat_unexpected_exits": run.links["dlt"].unexpected_exits,
        "readings_delivered": len(delivered_ids),
        "deliveries_incl_duplicates": len(readings),
        "readings_per_meter": {m: len(s) for m, s in sorted(by_meter.items())},
        "broker_lost_after_puback": len(broker_lost),
        "seq_gaps": gaps_total,
        "drops_counted_spool": spool_dropped,
        "drop_fields_gateway_status": dropped_fields(run.sub.last_retained(f"{PREFIX}/{GATEWAY}/status")),
        "drop_fields_api_status": dropped_fields(run.final_status),
        "truth_replies": len(truth),
        "truth_valid_replies": len(valid),
        "truth_missing_explained": dict(missing_by_kind),
        "truth_missing_unexplained": len(unexplained),
        "evidence_frames_not_sent_by_the_simulator": len(foreign),
        "oneshot": dict(run.oneshot),
        "max_poll_start_gap_s": max_gap,
        "max_read_at_gap_s": max_end_gap,
        "latest_poll_start_in_its_slot_s": {m: round(v, 2) for m, v in latest_in_slot.items()},
        "gap_pairs_checked": checked,
        "gap_pairs_in_fault_windows": excluded,
        "gap_pairs_unmapped": unknown,
        "backward_step_first_reading_s": [(round(a - run.t0, 1), d, m, None if f is None else round(f, 2))
                                          for a, d, m, f in stall_checks],
        "rss_kib_after_warmup": warm,
        "rss_kib_end": run.final_rss,
        "rss_kib_max_final_run": max((k for _, k in samples), default=None),
        "rss_parts_kib_final_run_per_minute": [(round(t - run.daemon_started), p)
                                               for t, r, p in run.rss_parts if r == final_run],
        "panics": logs.count("panicked"),
        "loadavg_end": os.getloadavg(),
        "exit_code": run.exit_code,
    }
    run.problems = {
        "seq": seq_problems, "dup": duplicate_mismatch, "truth": unexplained, "gaps": gap_problems,
        "foreign": foreign,
        "stalls": stall_checks, "samples": samples, "warm": warm,
    }
    with open(run.d / "chaos-gateway-status.jsonl", "w") as f:  # for a look at uptime_s, at, …
        for topic, payload, _ in run.sub.snapshot():
            if topic == f"{PREFIX}/{GATEWAY}/status":
                f.write(payload.decode(errors="replace") + "\n")
    text = json.dumps(run.report, indent=1, default=str)
    (run.d / "chaos-report.json").write_text(text)
    if os.environ.get("METERD_CHAOS_REPORT"):
        Path(os.environ["METERD_CHAOS_REPORT"]).write_text(text)
    print(f"\nchaos report ({run.d / 'chaos-report.json'}):\n{text}", flush=True)


def host_times(clock: FakeClock, seqs: dict) -> dict:
    """{seq: host time} of one meter's readings. After a backward step meterd's clock shows
    times again that it showed before, so `read_at` alone can fit two offsets; a meter's `seq`
    order is the order its readings were taken in, so the earliest fit not before the previous
    reading is the one."""
    out, prev = {}, float("-inf")
    for s in sorted(seqs):
        faked = ts(seqs[s]["read_at"])
        fits = []
        for i, (at, o) in enumerate(clock.timeline):
            end = clock.timeline[i + 1][0] if i + 1 < len(clock.timeline) else float("inf")
            if at - 1.0 <= faked - o < end + 1.0:
                fits.append(faked - o)
        later = sorted(x for x in fits if x >= prev - 1.0)
        if later:
            out[s] = prev = later[0]
    return out


def poll_starts(truth: list, delivered_frames: set, by_meter: dict, real: dict) -> dict:
    """{meter: {seq: (earliest, latest)}}: when each delivered poll began, in host time.

    `read_at` is stamped when a poll ends, so a poll whose replies needed retries (the noisy
    meter) ends later than its slot without having started late. A poll begins with its first
    request; the truth log has the simulator's host time of every reply. The reading's first
    evidence frame is the reply to its first request (a poll whose first request fails ends
    there); the attempts before it that nobody took (a corrupt or noisy reply, then the retry)
    are the same poll's, each within one response timeout and a retry of the next. A poll with
    no reply at all is (its end − FAIL_COST_S of its bus, its end)."""
    by_key = defaultdict(list)
    by_request = defaultdict(list)
    for t in truth:
        by_key[t["_key"]].append(t)
        by_request[(t["meter"], t["request"])].append(t)
    for entries in by_request.values():
        entries.sort(key=lambda t: t["_t"])
    out = {}
    for meter in GOOD:
        out[meter] = {}
        for s, doc in by_meter.get(meter, {}).items():
            end = real[meter].get(s)
            if end is None:
                continue
            if not doc["frames"]:
                out[meter][s] = (end - FAIL_COST_S[BUS_OF[meter]], end)
                continue
            key = frame_key(doc["frames"][0], doc["protocol"])
            fits = [t for t in by_key.get(key, []) if end - 3 * INTERVAL_S <= t["_t"] <= end + 0.5]
            if not fits:
                continue
            first = max(fits, key=lambda t: t["_t"])
            same = by_request[(first["meter"], first["request"])]
            i = next(j for j, t in enumerate(same) if t is first)
            while i > 0 and same[i - 1]["_key"] not in delivered_frames \
                    and same[i]["_t"] - same[i - 1]["_t"] <= RETRY_SPAN_S:
                i -= 1
            out[meter][s] = (same[i]["_t"], same[i]["_t"])
    return out


def stall_end(run: ChaosRun, at: float) -> tuple[float, bool]:
    """When today's wall-clock scheduler polls again after a backward step at `at`: when the
    stepped clock reaches the highest wall time it had scheduled from (since the last restart),
    or at the next restart, whichever comes first; and whether a later step or restart (not the
    clock catching up by itself) ended it."""
    last_restart = max((r for _, r in run.kills if r <= at), default=run.t0)
    line = run.clock.timeline
    high = max(min(t_end, at) + o for (t, o), t_end in zip(line, [x for x, _ in line[1:]] + [at])
               if t_end >= last_restart and t <= at)
    target = high + INTERVAL_S
    end, by_step = float("inf"), True
    points = [t for t, _ in line if t > at] + [float("inf")]
    seg_start = at
    for p in points:
        o = run.clock.offset_at(seg_start)
        if seg_start + o >= target:
            end = seg_start
            break
        if p + o >= target:
            end, by_step = target - o, False
            break
        seg_start = p
    nxt = min((r for _, r in run.kills if r > at), default=float("inf"))
    if nxt < end:
        end, by_step = nxt, True
    if run.chaos_end + 60 < end:
        end, by_step = run.chaos_end + 60, True
    return end, by_step


# -- the invariants -----------------------------------------------------------------------------

def test_meterd_never_exits_by_itself(chaos):
    r = chaos.report
    assert not chaos.crashes, f"meterd exited without being killed: {[(c[1], c[2][-1500:]) for c in chaos.crashes]}"
    assert r["panics"] == 0, "a task panicked: see meterd-*.stderr in " + str(chaos.d)
    assert r["exit_code"] == 0, "SIGTERM after the drain did not exit 0"
    assert r["socat_unexpected_exits"] == 0


def test_messages_validate_and_duplicates_identical(chaos):
    check_schemas(chaos.sub)
    assert not chaos.problems["dup"], f"same id, different payload: {chaos.problems['dup'][:5]}"


def test_no_seq_gap_that_is_not_a_counted_drop(chaos):
    """Counter used: the spool's durable per-meter `meters.dropped_batches` (overflow drops; the
    gateway status publishes their sum as `spool.dropped`). Readings lost before a seq was
    handed out do not make gaps; check 2 sees those."""
    assert not chaos.problems["seq"], "\n".join(chaos.problems["seq"])
    for meter in GOOD + DEAD:
        assert chaos.report["readings_per_meter"].get(meter, 0) > 0, f"{meter}: nothing delivered"


def test_every_answered_poll_delivered(chaos):
    missing = chaos.problems["truth"]
    drops = chaos.report["drop_fields_api_status"]
    assert not missing, (
        f"{len(missing)} replies the simulator sent are in no batch and no kill or link cut "
        f"interrupted them (drop counters seen: {drops}); e.g. "
        + "; ".join(f"{t['time']} {t['meter']} {t['response'][:40]}…" for t in missing[:5]))


def test_every_evidence_frame_was_sent_by_the_simulator(chaos):
    foreign = chaos.problems["foreign"]
    assert not foreign, f"{len(foreign)} evidence frames the simulator never sent, e.g. {foreign[:5]}"


def test_polls_on_time_outside_fault_windows(chaos):
    assert not chaos.problems["gaps"], "\n".join(chaos.problems["gaps"][:20])


@pytest.mark.xfail(not STRICT_CLOCK, strict=False,
                   reason="known open item: the scheduler runs on the wall clock and waits for a clock "
                          "stepped back to reach the slot it had planned (monotonic slots are being "
                          "fixed on another branch); METERD_CHAOS_STRICT_CLOCK=1 makes this strict")
def test_polls_continue_after_a_backward_clock_step(chaos):
    checks = chaos.problems["stalls"]
    if not checks:
        pytest.skip("no backward step with 2 quiet intervals after it in this run")
    late = [(round(a - chaos.t0, 1), d, m, f) for a, d, m, f in checks if f is None or f > 2 * INTERVAL_S]
    assert not late, f"no reading within {2 * INTERVAL_S} s of a backward step (t, step, meter, first): {late}"


def test_rss_stable_after_warmup(chaos):
    warm, end = chaos.problems["warm"], chaos.report["rss_kib_end"]
    assert warm, f"no RSS sample {WARMUP_S} s after the last start"
    assert end is not None
    assert end <= warm * 1.10, f"VmRSS grew from {warm} KiB after warm-up to {end} KiB at the end"
