"""Issue 4, test 2: the broker is killed (SIGKILL) for 60 s, five times in a row, while the meters
are polled every second. Afterwards every reading the daemon took has arrived: no per-meter
`seq` gap, every reply the simulator sent is in a batch (one the killed broker lost after its
PUBACK counts through the tap's copy), duplicates only as byte-identical
copies under the same `id`. Takes about 6 minutes.

The subscriber's broker keeps its sessions on disk (`persistence true`, saved every second) and
the subscriber has a persistent session, so readings the broker acknowledged while the
subscriber was reconnecting are queued for it.

A SIGKILLed mosquitto can still lose a message it had PUBACKed but neither saved nor delivered
(it saves once a second). So meterd talks to the broker through an MQTT tap (`mqtt_tap.py`)
that records every PUBLISH and PUBACK: a reading missing at the subscriber fails the test
unless the broker had acknowledged it — then the broker lost it, and the test says so. A
reading deleted from the spool without a PUBACK is always meterd's fault and always fails."""
import os
import signal
import time

import pytest

from conftest import wait_for
from daemon_rig import GATEWAY, METERS, Rig, quiet_port, check_against_truth, check_schemas, check_sequence, spool_state
from mqtt_tap import MqttTap

OUTAGES = 5
# The acceptance length; METERD_OUTAGE_S shortens it for a quick local check.
OUTAGE_S = int(os.environ.get("METERD_OUTAGE_S", "60"))

BROKER_PERSISTENT = (
    "persistence true\npersistence_location {dir}/\nautosave_interval 1\n"
    "max_queued_messages 0\nmax_inflight_messages 20\n"
)


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


def test_five_broker_outages_lose_nothing(rig):
    # The broker's port is outside the ephemeral range: nobody else takes it while it is down.
    broker = rig.broker(BROKER_PERSISTENT, port=quiet_port())
    tap = MqttTap(broker.port, quiet_port())
    sub = rig.collector(broker.port)
    time.sleep(3)  # the subscriber's session is on disk before the first kill
    rig.start_sim()
    rig.write_config(f"mqtt://127.0.0.1:{tap.port}", interval="1s")
    d = rig.start_daemon()
    wait_for(lambda: {doc["meter"] for _, doc in sub.readings()} >= set(METERS), 60, "first readings")

    # Readings the broker had acknowledged when it was killed: if one never reaches the
    # subscriber, the SIGKILLed broker lost it (judged at the end, with the tap's record).
    acked_at_kills = set()

    def drained():
        """The subscriber has caught up: it has every reading the broker acknowledged so far and
        every meter's seqs without a gap, apart from readings a killed broker had acknowledged.
        (No gap alone is not enough: a backlog drains in order, so a half-drained backlog has
        none, and a kill then would land on thousands of acknowledged, unsaved readings.)"""
        acked = tap.acked_ids()  # before reading the subscriber: all of these must be there
        docs = sub.readings()
        if acked - {doc["id"] for _, doc in docs} - acked_at_kills:
            return False
        seqs = {}
        for _, doc in docs:
            seqs.setdefault(doc["meter"], set()).add(doc["seq"])
        for m in METERS:
            if m not in seqs:
                return False
            gaps = set(range(min(seqs[m]), max(seqs[m]) + 1)) - seqs[m]
            if any(f"{GATEWAY}/{m}/{q}" not in acked_at_kills for q in gaps):
                return False
        return True

    outages = 0
    for n in range(OUTAGES):
        before = len(sub.readings())
        # Kill only once the subscriber has caught up: a SIGKILLed mosquitto loses what it had
        # acknowledged but not yet delivered (it saves to disk once a second), which would be
        # the test broker's loss, not meterd's. meterd keeps publishing new readings (4 a
        # second), so the kill still lands on publishes in flight.
        try:
            wait_for(lambda: len(sub.readings()) >= before + 8 and drained(), 120, f"caught up before outage {n + 1}")
        except TimeoutError:
            break  # the checks below say what is missing
        truth_before = len(rig.truth_lines())
        broker.stop(kill=True)
        # The tap may still be recording the killed broker's last PUBACKs.
        tap.wait_closed()
        acked_at_kills |= tap.acked_ids()
        time.sleep(OUTAGE_S)
        assert d.alive(), f"meterd died during outage {n + 1}:\n{d.text()[-3000:]}"
        # Polling went on while the broker was away.
        assert len(rig.truth_lines()) >= truth_before + 2 * OUTAGE_S, "meterd stopped polling during the outage"
        broker.start()
        outages += 1

    # Drain: everything the spool numbered so far arrives.
    try:
        wait_for(drained, 120, "the backlog to drain without gaps")
    except TimeoutError:
        pass  # the checks below say what is missing
    time.sleep(5)
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.text()[-3000:]
    rig.sim.stop()
    time.sleep(2)  # last deliveries to the subscriber

    readings = sub.readings()
    check_schemas(sub)
    last, pending, payloads = spool_state(rig.data_dir)
    got = {}
    for _, doc in readings:
        got.setdefault(doc["meter"], set()).add(doc["seq"])
    acked, published = tap.acked_ids(), tap.published_ids()
    tap.close()
    lost_by_broker, lost_by_meterd = [], []
    for meter, have in got.items():
        for seq in sorted(set(range(min(have), max(have) + 1)) - have):
            rid = f"{GATEWAY}/{meter}/{seq}"
            if seq in pending.get(meter, []):
                continue  # still in the spool: not lost (the drain checks below catch it)
            (lost_by_broker if rid in acked else lost_by_meterd).append(
                (rid, "published" if rid in published else "never published"))
    print(f"tap: {len(published)} readings published, {len(acked)} acknowledged by the broker")
    if lost_by_broker:
        print(f"lost by the SIGKILLed broker after its PUBACK (not meterd's): {lost_by_broker}")
    assert not lost_by_meterd, f"readings meterd deleted without a PUBACK: {lost_by_meterd}"
    # The broker's own losses leave gaps that are not meterd's; fill them for the checks below.
    broker_lost = {rid for rid, _ in lost_by_broker}
    seqs = check_sequence(readings, tolerate=broker_lost)
    assert outages == OUTAGES, f"only {outages} outages ran: the subscriber did not catch up"
    for meter in METERS:
        published = set(seqs[meter])
        still = set(pending.get(meter, []))
        assert max(published | still) == last[meter], (meter, last[meter], max(published))
        assert len(still) <= 3, f"{meter}: {len(still)} readings left in the spool after the drain"
    # What the killed broker lost after its PUBACK was still published by meterd: the tap's copy
    # of it is evidence too (otherwise its meter replies would count as missing).
    broker_lost_payloads = [p for p in (tap.payload(rid) for rid in broker_lost) if p is not None]
    compared, missing = check_against_truth(readings + sub.freezes(), rig.truth_lines(), list(payloads) + broker_lost_payloads)
    assert not missing, f"{len(missing)} replies the simulator sent are in no batch, e.g. {missing[:2]}"
    total = sum(len(s) for s in seqs.values())
    # OUTAGES × OUTAGE_S of outage at 4 meters/s (1000+ readings at the acceptance length)
    # went through the spool.
    assert total >= 4 * OUTAGES * OUTAGE_S * 0.8, total
    dups = len(readings) - total
    print(f"\n{total} readings, {dups} duplicate deliveries, {compared} values compared with the truth")
