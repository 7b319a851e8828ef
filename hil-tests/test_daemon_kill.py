"""Issue 4, test 3: `kill -9` of meterd at random moments while it publishes, ten times, each
time restarted on the same spool. No per-meter `seq` gap across the restarts, duplicates only
as byte-identical copies under the same `id`, every reply of the simulator in some batch, and
the broker publishes the last will (`connection-lost`) after a kill."""
import random
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import wait_for
from daemon_rig import GATEWAY, METERS, PREFIX, Rig, check_against_truth, check_schemas, check_sequence, spool_state

KILLS = 10


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


def test_kill_9_ten_times_keeps_seq_and_ids(rig):
    seed = random.randrange(1 << 30)
    print(f"\nkill moments seed {seed}")
    rnd = random.Random(seed)
    broker = rig.broker()
    sub = rig.collector(broker.port)
    rig.start_sim()
    # A broker that acknowledges slowly is not needed: 4 meters every 500 ms keep the uplink
    # publishing, and each restart re-sends what the killed one had not seen acknowledged.
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="500ms")
    wills = 0
    kills = []
    for n in range(KILLS):
        before = len(sub.readings())
        d = rig.start_daemon()
        wait_for(lambda: len(sub.readings()) > before, 30, f"publishing after start {n + 1}")
        time.sleep(rnd.uniform(0.2, 3.0))
        assert d.alive(), d.text()[-2000:]
        d.signal(signal.SIGKILL)
        kills.append(datetime.now(timezone.utc))
        d.wait(10)
        try:
            wait_for(lambda: (sub.last_retained(f"{PREFIX}/{GATEWAY}/status") or {}).get("reason") == "connection-lost",
                     10, "the last will")
            wills += 1
        except TimeoutError:
            pass
    d = rig.start_daemon()
    before = len(sub.readings())
    wait_for(lambda: len(sub.readings()) > before + 20, 60, "publishing after the last restart")
    time.sleep(3)
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0, d.text()[-3000:]
    rig.sim.stop()
    time.sleep(1)

    readings = sub.readings()
    check_schemas(sub)
    last, pending, payloads = spool_state(rig.data_dir)
    seqs = check_sequence(readings)
    for meter in METERS:
        assert max(set(seqs[meter]) | set(pending.get(meter, []))) == last[meter], meter
    compared, missing = check_against_truth(readings + sub.freezes(), rig.truth_lines(), payloads)
    # A kill can interrupt a poll: replies the simulator sent for a poll that was never
    # stored were never "taken" (no seq was handed out). A kill loses at most the poll in
    # progress on each bus, so every reply in no batch was sent just before a kill.
    for t in missing:
        sent = datetime.fromisoformat(t["time"].replace("Z", "+00:00"))
        assert any(timedelta(0) <= k - sent <= timedelta(seconds=3) for k in kills), (
            f"reply sent at {t['time']} is in no batch and no kill followed it within 3 s: {t}")
    assert wills == KILLS, f"last will seen after {wills} of {KILLS} kills"
    dups = len(readings) - sum(len(s) for s in seqs.values())
    print(f"{sum(len(s) for s in seqs.values())} readings, {dups} duplicates, {len(missing)} replies of interrupted polls")
