"""Wall-clock steps (issue "no lock-up, no stalled bus", item 3): `meterd run` under
libfaketime, its wall clock stepped back by 1 h, forward by 1 h, and forward by 1 h again while
it polls `meterd simulate` (DL/T 645 on a pty, Modbus TCP) and publishes to mosquitto.

Only meterd's wall clock is faked (`FAKETIME_DONT_FAKE_MONOTONIC=1`: its monotonic clock is
the real one); the simulator, the broker and this test keep the real time. The simulator's
ground-truth log stamps each reply with the real time, so every published reading has two
times: `read_at` (meterd's wall clock) and when its last evidence frame was sent (real).

Checked:
- polls continue at the configured interval across every step: for each meter, consecutive
  polls are 0.5 to 1.5 intervals apart in real time (a scheduler on the wall clock stops every
  bus for the hour after a backward step; one that catches up bursts after a forward step);
- `read_at` follows the new wall time: `read_at − real time` is the offset in force;
- nothing is lost: no `seq` gap, every reply the simulator sent is in a published batch (or
  still in the spool), every message validates against its schema;
- the step is logged and counted: `clock_steps` in the retained gateway status is 3.
"""
import os
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import wait_for
from daemon_rig import (GATEWAY, METERS, PREFIX, Rig, check_against_truth, check_schemas, check_sequence,
                        spool_state)

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
INTERVAL = 2.0
PHASE = 10.0  # seconds at each offset
# The offsets of meterd's wall clock, one phase each: back 1 h, forward 1 h, forward 1 h.
OFFSETS = [0, -3600, 0, 3600]


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


def set_offset(path: Path, seconds: int):
    """libfaketime's relative offset ("+0", "-3600", "+3600"), written atomically: with
    FAKETIME_NO_CACHE=1 meterd rereads the file on every clock read."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds:+d}\n")
    os.replace(tmp, path)


def test_wall_clock_steps_neither_stall_nor_burst_nor_lose(rig):
    if not LIBFAKETIME.exists():
        if shutil.which("faketime") is None and os.environ.get("METERD_REQUIRE_PARTS") != "1":
            pytest.skip("libfaketime missing: run hil-tests/setup")
        pytest.fail(f"{LIBFAKETIME} missing: run hil-tests/setup")
    broker = rig.broker()
    sub = rig.collector(broker.port)
    rig.start_sim()
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval=f"{INTERVAL:g}s")
    fake = rig.d / "faketime.rc"
    set_offset(fake, 0)
    env = dict(os.environ,
               LD_PRELOAD=str(LIBFAKETIME),
               FAKETIME_TIMESTAMP_FILE=str(fake),
               FAKETIME_NO_CACHE="1",
               FAKETIME_DONT_FAKE_MONOTONIC="1")
    d = rig.start_daemon(env=env)
    wait_for(lambda: len({doc["meter"] for _, doc in sub.readings()}) == len(METERS), 30, "every meter publishing")

    # (real time the offset took effect, offset)
    phases = [(time.time(), 0)]
    time.sleep(PHASE)
    for offset in OFFSETS[1:]:
        set_offset(fake, offset)
        phases.append((time.time(), offset))
        time.sleep(PHASE)
        assert d.alive(), d.text()[-3000:]
    status_topic = f"{PREFIX}/{GATEWAY}/status"
    try:
        wait_for(lambda: (sub.last_retained(status_topic) or {}).get("clock_steps") == 3, 15,
                 "clock_steps = 3 in the gateway status")
    except TimeoutError:
        pass  # asserted below, after what the readings say

    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.text()[-3000:]
    rig.sim.stop()
    time.sleep(1)

    readings = sub.readings()
    check_schemas(sub)
    check_sequence(readings)
    last, pending, payloads = spool_state(rig.data_dir)
    truth = rig.truth_lines()
    compared, missing = check_against_truth(readings + sub.freezes(), truth, payloads)
    assert not missing, f"{len(missing)} replies of the simulator in no batch, first: {missing[0]}"

    # The real time of each reading: when the simulator sent its last evidence frame.
    sent_at = {}
    for t in truth:
        sent_at.setdefault(t["response"].upper(), ts(t["time"]))

    def real_time(doc):
        times = []
        for frame in doc["frames"]:
            frame = frame.upper()
            if doc["protocol"] == "modbus-tcp":
                frame = bytes.fromhex(frame)[7:].hex(" ").upper()
            if frame in sent_at:
                times.append(sent_at[frame])
        return max(times) if times else None

    def offset_at(real):
        current = phases[0][1]
        for start, offset in phases:
            if real >= start:
                current = offset
        return current

    def near_step(real):
        return any(abs(real - start) < 1.0 for start, _ in phases[1:])

    by_meter = {}
    for _, doc in readings:
        real = real_time(doc)
        if real is None:
            continue  # a poll with no answer at all has no real time (none expected here)
        by_meter.setdefault(doc["meter"], {})[doc["seq"]] = (real, ts(doc["read_at"]))
    report = []
    for meter in METERS:
        polls = sorted(by_meter[meter].values())
        # read_at follows the wall clock in force, to within the poll's own duration.
        for real, read_at in polls:
            if near_step(real):
                continue
            want = offset_at(real)
            assert abs(read_at - real - want) < 1.0, (
                f"{meter}: read_at {read_at} is {read_at - real:+.1f} s from the real time {real}, "
                f"the offset in force was {want:+d} s")
        # Every step phase has its readings: nothing paused for the hour.
        for (start, offset), end in zip(phases, [p[0] for p in phases[1:]] + [phases[-1][0] + PHASE]):
            inside = [p for p in polls if start + 1 <= p[0] <= end - 1]
            assert len(inside) >= (PHASE - 2) / INTERVAL - 1, (
                f"{meter}: {len(inside)} polls in the {offset:+d} s phase of {PHASE:g} s")
        # The pace: consecutive polls 0.5 to 1.5 intervals apart, in real time. (The first
        # poll comes at once on start, mid-slot: gaps count from the second.)
        gaps = [b[0] - a[0] for a, b in zip(polls[1:], polls[2:])]
        assert all(0.5 * INTERVAL <= g <= 1.5 * INTERVAL for g in gaps), (
            f"{meter}: gaps between polls {['%.2f' % g for g in gaps]}")
        report.append(f"{meter}: {len(polls)} polls, gaps {min(gaps):.2f}..{max(gaps):.2f} s")
    logs = d.text()
    assert "wall clock stepped back by 1h" in logs, logs[-3000:]
    assert logs.count("wall clock stepped forward by 1h") >= 2, logs[-3000:]
    status = sub.last_retained(status_topic)
    assert status.get("clock_steps") == 3, status
    print(f"\n{compared} values compared with the truth; " + "; ".join(report))
