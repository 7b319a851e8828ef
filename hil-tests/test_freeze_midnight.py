"""A real midnight crossing (issue "settlement-grade data", acceptance): `meterd simulate` and
`meterd run` both under libfaketime, started at 23:59:20 China Standard Time, a DL/T 645-2007
meter keeping that zone, mosquitto, a QoS 1 subscriber as the billing core.

Checked:
- at start, the records already due are read at once: the daily records of the last two
  midnights, as back-fill except the newest;
- after the meter's midnight the new daily record (stamped the new day at 00:00) is read and
  published, not as a back-fill, with `read_at` after midnight;
- every record once per id, stamped `…T00:00:00+08:00`, each value the simulator's frozen
  register for that record (matched through its evidence frames in the simulator's truth log);
- every message (readings, freezes, completeness, statuses) validates against its schema, and
  the retained completeness counts the meter's record of the day just closed as delivered.
"""
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import port_open, wait_for
from daemon_rig import GATEWAY, PREFIX, Proc, Rig, check_against_truth, check_schemas

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
ADDR = "000000000001"
# 23:59:20 in China (UTC+8).
START_UTC = "2026-12-07 15:59:20"


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


def faked(start: str) -> dict:
    # "@" starts the process's clock at that instant and lets it run (both processes start
    # within a second of each other, so their clocks agree to about that).
    return dict(os.environ, LD_PRELOAD=str(LIBFAKETIME), FAKETIME=f"@{start}", TZ="UTC",
                FAKETIME_DONT_FAKE_MONOTONIC="1")


def test_the_new_daily_record_is_read_after_midnight_and_published(rig):
    if not LIBFAKETIME.exists():
        if shutil.which("faketime") is None and os.environ.get("METERD_REQUIRE_PARTS") != "1":
            pytest.skip("libfaketime missing: run hil-tests/setup")
        pytest.fail(f"{LIBFAKETIME} missing: run hil-tests/setup")
    broker = rig.broker()
    sub = rig.collector(broker.port)
    sim_port = rig.modbus_port  # any free port: here the simulated device server's
    sim_cfg = rig.d / "sim.toml"
    sim_cfg.write_text(
        f'[[port]]\nname = "dlt"\ntcp = "127.0.0.1:{sim_port}"\n'
        f'[[port.meter]]\nprotocol = "dlt645-2007"\naddress = "{ADDR}"\nprofile = "dlt645-three-phase"\nseed = 9\n')
    env = faked(START_UTC)
    rig.sim = Proc([rig.bin, "simulate", "--config", sim_cfg, "--truth", rig.truth], rig.d, "sim", env=env)
    rig.procs.append(rig.sim)
    wait_for(lambda: port_open(sim_port), 20, "simulator port")
    rig.config = rig.d / "meterd.toml"
    rig.config.write_text(
        f'gateway = "{GATEWAY}"\ndata_dir = "{rig.data_dir}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\ntopic_prefix = "{PREFIX}"\nstatus_interval = "5s"\n'
        f'[freeze]\ndelay = "0s"\nbackfill_days = 2\n'
        f'[[bus]]\nname = "dlt"\ntransport = "tcp"\nhost = "127.0.0.1:{sim_port}"\n'
        f'timing = {{ response_timeout = "500ms", retries = 1 }}\n'
        f'[[bus.meter]]\nprotocol = "dlt645-2007"\naddress = "{ADDR}"\nprofile = "dlt645-three-phase"\n'
        f'interval = "15m"\nfreezes = ["daily"]\n')
    d = rig.start_daemon(env=env)

    def daily():
        return {doc["id"]: (raw, doc) for raw, doc in sub.freezes() if doc["kind"] == "daily"}

    before = f"{GATEWAY}/{ADDR}/daily/2026-12-07T00:00+08:00"
    earlier = f"{GATEWAY}/{ADDR}/daily/2026-12-06T00:00+08:00"
    after = f"{GATEWAY}/{ADDR}/daily/2026-12-08T00:00+08:00"
    wait_for(lambda: {before, earlier} <= set(daily()), 30, f"records due at start; daemon:\n{d.text()}")
    assert after not in daily(), "a record before its midnight"
    # Midnight is ~40 s after start; the record is read at once after it.
    wait_for(lambda: after in daily(), 90, f"the record after midnight; daemon:\n{d.text()}")
    time.sleep(3)  # the completeness follows its ack
    got = daily()
    assert set(got) == {before, earlier, after}, sorted(got)
    ids = [doc["id"] for _, doc in sub.freezes()]
    assert len(ids) == len(set(ids)), f"a record twice: {ids}"
    for rid, (_, doc) in got.items():
        assert doc["frozen_at"] == rid.rsplit("/", 1)[1].replace("+08:00", ":00+08:00")
        assert doc["backfill"] == (rid == earlier), (rid, doc["backfill"])
        assert all(v["quality"] == "good" for v in doc["values"]), doc
        assert len(doc["frames"]) == 3, doc["frames"]
    assert got[after][1]["read_at"] >= "2026-12-07T16:00:00", got[after][1]["read_at"]

    d.stop()
    rig.sim.stop()
    check_schemas(sub)
    compared, missing = check_against_truth(sub.readings() + sub.freezes(), rig.truth_lines())
    assert compared >= 3 * 10, compared
    assert not missing, f"replies of the simulator in no message: {missing[:2]}"
    completeness = sub.last_retained(f"{PREFIX}/{GATEWAY}/completeness")
    assert completeness is not None, "no completeness message"
    today = next(day for day in completeness["days"] if day["day"] == "2026-12-07")
    assert (today["expected"], today["delivered"], today["missing"]) == (1, 1, []), completeness
