"""Issue 4, test 1: simulator (DL/T 645-2007 on a pty, Modbus TCP) → `meterd run` → mosquitto →
a QoS 1 subscriber. Every published value is the simulator's truth for that exchange, exactly,
and every message validates against its JSON Schema. The same over MQTT 5 through a broker
restart, and an MQTT 5 broker that refuses every publish (nothing leaves the spool)."""
import json
import signal
import subprocess
import time

import jsonschema
import pytest

from conftest import wait_for
from daemon_rig import (GATEWAY, METERS, PREFIX, SCHEMAS, Rig, check_against_truth, check_schemas,
                        check_sequence, quiet_port, spool_state)


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


def test_end_to_end_values_are_the_meters_values_exactly(rig):
    broker = rig.broker()
    sub = rig.collector(broker.port)  # subscribed before meterd starts
    rig.start_sim()
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="2s")
    d = rig.start_daemon()

    def enough():
        got = {doc["meter"] for _, doc in sub.readings()}
        return len(sub.readings()) >= 24 and got >= set(METERS)

    wait_for(enough, 90, "readings of every meter")
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.text()
    rig.sim.stop()

    readings, counts = check_delivered(rig, sub, 24)
    assert counts["meter-status"] >= 4, counts
    # Both protocols, and good values: a run on a healthy bus has no bad values at all.
    protocols = {doc["protocol"] for _, doc in readings}
    assert protocols == {"dlt645-2007", "modbus-tcp"}, protocols
    bad = [(doc["id"], v) for _, doc in readings for v in doc["values"] if v["quality"] != "good"]
    assert not bad, bad[:5]


def check_delivered(rig, sub, min_readings):
    """After a stopped run: every message valid; per meter no seq gap and everything the spool
    numbered published or still in the spool; values equal to the simulator's truth; the
    retained gateway status offline because of a shutdown. Returns (readings, counts)."""
    readings = sub.readings()
    counts = check_schemas(sub)
    assert counts["reading"] >= min_readings and counts["gateway-status"] >= 1, counts
    last, pending, payloads = spool_state(rig.data_dir)
    seqs = check_sequence(readings)
    for meter in METERS:
        assert max(seqs[meter] + pending.get(meter, [])) == last[meter], (meter, last, pending)
    compared, missing = check_against_truth(readings + sub.freezes(), rig.truth_lines(), payloads)
    assert compared >= min_readings * 5, compared
    assert not missing, f"{len(missing)} replies of the simulator are in no batch, e.g. {missing[:2]}"
    status = sub.last_retained(f"{PREFIX}/{GATEWAY}/status")
    assert status["state"] == "offline" and status.get("reason") == "shutdown", status
    return readings, counts


# The subscriber's broker keeps its sessions across the restart below.
BROKER_PERSISTENT = "persistence true\npersistence_location {dir}/\nautosave_interval 1\n"
# mosquitto logs each client's protocol version: "(p5, c1, k30)" for MQTT 5.
BROKER_LOG = "log_dest file {dir}/mosquitto.log\nlog_type notice\nconnection_messages true\n"


def test_mqtt5_end_to_end_through_a_broker_restart(rig):
    """`mqtt.protocol = "5"`: the same contract over MQTT 5 (rumqttc's v5 client against
    mosquitto's MQTT 5), through a broker restart: values equal the simulator's truth, no seq
    gap, duplicates only under the same id, every message valid, offline status at the stop."""
    broker = rig.broker(BROKER_PERSISTENT + BROKER_LOG, port=quiet_port())
    sub = rig.collector(broker.port)
    time.sleep(2)  # the subscriber's session is on disk before the restart
    rig.start_sim()
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="1s", mqtt_extra='protocol = "5"')
    d = rig.start_daemon()
    wait_for(lambda: {doc["meter"] for _, doc in sub.readings()} >= set(METERS), 60, "first readings")
    assert "connected to the MQTT broker" in rig.daemon_logs()
    log = (broker.dir / "mosquitto.log").read_text()
    assert f"as meterd-{GATEWAY} (p5," in log, log[-2000:]

    broker.stop()
    time.sleep(5)  # polling goes on; the readings wait in the spool
    before = len(sub.readings())
    broker.start()
    wait_for(lambda: len(sub.readings()) >= before + 5 * len(METERS) + 10, 90, "readings after the restart")
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.text()
    rig.sim.stop()

    check_delivered(rig, sub, 30)


def test_mqtt5_refused_publishes_stay_in_the_spool(rig):
    """An MQTT 5 broker that refuses the gateway's publishes (mosquitto with an ACL that lets
    it read only answers PUBACK "not authorised"): no reading is deleted from the spool, each
    refused reading is logged, and every seq handed out is still there after the stop."""
    acl = rig.d / "acl"
    acl.write_text("topic read #\n")
    broker = rig.broker(f"acl_file {acl}\n" + BROKER_LOG)
    rig.start_sim()
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="1s", mqtt_extra='protocol = "5"')
    d = rig.start_daemon()
    # The statuses (gateway + one per meter) are refused too; then 4 readings a second, each
    # logged as an error at its first refusal (its retries, with backoff, at debug level).
    wait_for(lambda: rig.daemon_logs().count("kept in the outbox, published again") >= 12
             and "the broker refused a status publish" in rig.daemon_logs(),
             60, "refused publishes")
    # `meterd spool` refuses a spool the daemon holds, and says what to do.
    busy = subprocess.run([str(rig.bin), "spool", str(rig.data_dir / "spool.sqlite")],
                          capture_output=True, text=True, timeout=30)
    assert busy.returncode == 2 and "stop meterd first" in busy.stderr, busy
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.text()
    rig.sim.stop()
    assert "NotAuthorized" in rig.daemon_logs()
    last, pending, payloads = spool_state(rig.data_dir)
    # With the daemon stopped, `meterd spool` prints the same readings as the reference LZ4
    # library decodes from the file, oldest first, and counts them.
    shown = subprocess.run([str(rig.bin), "spool", str(rig.data_dir / "spool.sqlite")],
                           capture_output=True, timeout=30)
    assert shown.returncode == 0, shown
    assert shown.stdout.splitlines() == payloads
    assert f"{len(payloads)} readings not yet acknowledged".encode() in shown.stderr, shown.stderr
    missing = subprocess.run([str(rig.bin), "spool", str(rig.d / "nothing.sqlite")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no spool file there" in missing.stderr, missing
    assert not (rig.d / "nothing.sqlite").exists()
    for meter in METERS:
        seqs = pending.get(meter, [])
        # Every seq this meter was given is still stored: none was deleted on a refusal.
        assert len(seqs) >= 3 and seqs == list(range(seqs[0], last[meter] + 1)), (meter, last[meter], seqs)
    # The stored payloads (compressed in the file) are the readings themselves: decoded by the
    # reference LZ4 library, each is a reading of its row's meter that validates.
    assert len(payloads) == sum(len(v) for v in pending.values())
    stored = [(doc["meter"], doc["seq"]) for doc in map(json.loads, payloads)]
    assert sorted(stored) == sorted((m, s) for m, seqs in pending.items() for s in seqs)
    for p in payloads:
        jsonschema.validate(json.loads(p), SCHEMAS["reading"])
