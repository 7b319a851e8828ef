"""Issue 4, test 5: bad conditions. A corrupt spool, an unusable data directory, a full disk
(a small tmpfs), and a wrong MQTT password."""
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import wait_for
from daemon_rig import METERS, Rig, check_against_truth, check_sequence, require_parts, spool_state


@pytest.fixture
def rig(meterd, workdir):
    r = Rig(meterd, workdir)
    yield r
    r.close()


def error_lines(text):
    return [l for l in text.splitlines() if l.strip()]


def test_corrupt_spool_refuses_to_start_and_keeps_the_file(rig):
    rig.data_dir.mkdir()
    spool = rig.data_dir / "spool.sqlite"
    garbage = os.urandom(3) + b"this is not a database " * 400
    spool.write_bytes(garbage)
    rig.write_config("mqtt://127.0.0.1:9")
    d = rig.start_daemon()
    code = d.wait(20)
    assert code != 0
    err = d.err.read_text()
    lines = [l for l in error_lines(err) if "meterd run:" in l]
    assert len(lines) == 1, err
    line = lines[0]
    assert str(spool) in line and "corrupt" in line and "move it aside" in line, line
    assert spool.read_bytes() == garbage, "the corrupt spool was changed"
    assert sorted(p.name for p in rig.data_dir.iterdir()) == ["spool.sqlite"], list(rig.data_dir.iterdir())


def test_data_dir_that_is_a_file_is_a_clear_error(rig):
    not_a_dir = rig.d / "data-file"
    not_a_dir.write_text("I am a file\n")
    rig.write_config("mqtt://127.0.0.1:9", data_dir=not_a_dir)
    d = rig.start_daemon()
    assert d.wait(20) != 0
    lines = [l for l in error_lines(d.err.read_text()) if "meterd run:" in l]
    assert len(lines) == 1, d.text()
    assert str(not_a_dir) in lines[0] and "not a directory" in lines[0], lines[0]
    print("\n" + lines[0])
    assert not_a_dir.read_text() == "I am a file\n"


def test_read_only_spool_is_a_clear_error(rig):
    """A read-only tmpfs holding an existing spool: the daemon refuses with a reason."""
    mnt = rig.d / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        if require_parts():
            pytest.fail("cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)")
        pytest.skip("cannot mount a tmpfs")
    try:
        rig.write_config("mqtt://127.0.0.1:9", data_dir=mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        d = rig.start_daemon()
        assert d.wait(20) != 0
        lines = [l for l in error_lines(d.err.read_text()) if "meterd run:" in l]
        assert len(lines) == 1, d.text()
        print("\n" + lines[0])
        assert str(mnt) in lines[0] and "read-only" in lines[0] and "writable" in lines[0], lines[0]
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_keeps_readings_in_memory_and_stores_them_later(rig):
    mnt = rig.d / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True).returncode:
        if require_parts():
            pytest.fail("cannot mount a tmpfs (needs root / CAP_SYS_ADMIN)")
        pytest.skip("cannot mount a tmpfs")
    try:
        broker = rig.broker()
        sub = rig.collector(broker.port)
        rig.start_sim()
        rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="1s", data_dir=mnt, max_bytes="4MiB")
        d = rig.start_daemon()
        wait_for(lambda: {doc["meter"] for _, doc in sub.readings()} >= set(METERS), 60, "first readings")
        # Fill the file system to the last byte, early: the WAL is still short, so the next
        # append needs new space.
        filler = mnt / "filler"
        # Unbuffered: a buffered file's close would try to flush the bytes that did not fit and
        # raise ENOSPC out of the `with` (it did, depending on how full the spool had left it).
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        for i in range(64):  # the last partial blocks
            try:
                (mnt / f"f{i}").write_bytes(b"\0" * 512)
            except OSError:
                break
        wait_for(lambda: "disk full" in d.text(), 60, "the spool's disk-full error")
        full_at = len(sub.readings())
        time.sleep(8)
        assert d.alive(), d.text()[-3000:]
        log = d.text()
        line = next(l for l in log.splitlines() if "disk full" in l)
        print("\n" + line)
        assert "cannot store readings" in line and str(mnt) in line, line
        truth_during = len(rig.truth_lines())
        # Space again: the readings kept in memory are stored and published.
        filler.unlink()
        for p in mnt.glob("f*"):
            p.unlink()
        wait_for(lambda: len(sub.readings()) > full_at + 40, 60, "publishing after space came back")
        time.sleep(3)
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0, d.text()[-3000:]
        rig.sim.stop()
        time.sleep(1)
        readings = sub.readings()
        last, pending, payloads = spool_state(mnt)
        seqs = check_sequence(readings)
        for meter in METERS:
            assert max(set(seqs[meter]) | set(pending.get(meter, []))) == last[meter], meter
        compared, missing = check_against_truth(readings + sub.freezes(), rig.truth_lines(), payloads)
        assert not missing, f"{len(missing)} replies polled while the disk was full never arrived, e.g. {missing[:1]}"
        assert truth_during > 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_wrong_password_is_reported_and_retried_until_fixed(rig):
    """The broker's password file does not have the gateway's password: meterd logs "not
    authorised", keeps retrying, and delivers once the broker's password file is fixed (SIGHUP
    to mosquitto) — without a restart of meterd. (meterd reads its own password file once at
    start: a fix on the gateway's side needs a restart.)"""
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd missing: run hil-tests/setup")
    pw = rig.d / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "hil-gw", "old-password"], check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "billing", "billing-pw"], check=True, capture_output=True)
    pw.chmod(0o600)
    broker = rig.broker(f"allow_anonymous false\npassword_file {pw}\n")
    sub = rig.collector_auth(broker.port, "billing", "billing-pw")
    rig.start_sim()
    secret = rig.d / "mqtt-password"
    secret.write_text("new-password\n")
    rig.write_config(f"mqtt://127.0.0.1:{broker.port}", interval="2s",
                     mqtt_extra=f'username = "hil-gw"\npassword_file = "{secret}"\n')
    d = rig.start_daemon()
    wait_for(lambda: d.text().count("not authorised") >= 2 or not d.alive(), 90, "two refused attempts")
    assert d.alive(), d.text()
    assert not sub.readings()
    line = next(l for l in d.text().splitlines() if "not authorised" in l)
    print("\n" + line)
    assert "retrying" in line, line
    assert "new-password" not in d.text(), "the password was logged"
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "hil-gw", "new-password"], check=True, capture_output=True)
    broker.proc.send_signal(signal.SIGHUP)  # mosquitto reloads its password file
    wait_for(lambda: len(sub.readings()) >= 4, 90, "readings after the password file was fixed")
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0
    check_sequence(sub.readings())
