"""`meterd read` and `meterd scan` against the PyPI `dlt645==3.2.0` meter simulator on a pty.

The oracle is an independent DL/T 645-2007 implementation: it encodes the values it is given
(BCD, +33h, its own checksum), and meterd must read every one back to the digit through the
same driver, bus and exchange code the daemon uses. The oracle has no block DIs, so only
single-item quantities are read (shared/notes/dlt645.md §4.1). Ptys cannot do parity: 8N1.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ADDRESS = "123456789012"
# DI -> value given to the oracle
VALUES = {
    "00000000": 1234.56,
    "00010000": 987.65,
    "00010100": 100.01,
    "00020000": 45.6,
    "02010100": 220.5,
    "02010200": 221.3,
    "02020100": -1.234,
    "02030000": 1.5,
    "02060000": 0.987,
    "02800002": 50.01,
    "01010000": [12.3456, "2024-05-06T07:08"],
}
# quantity -> (DI, JSON text of the value, unit): the digits the meter sends, not a float's
EXPECTED = {
    "energy.active.combined.total": ("00000000", "1234.56", "kWh"),
    "energy.active.import.total": ("00010000", "987.65", "kWh"),
    "energy.active.import.t1": ("00010100", "100.01", "kWh"),
    "energy.active.export.total": ("00020000", "45.60", "kWh"),
    "voltage.l1": ("02010100", "220.5", "V"),
    "voltage.l2": ("02010200", "221.3", "V"),
    "current.l1": ("02020100", "-1.234", "A"),
    "power.active.total": ("02030000", "1.5000", "kW"),
    "power_factor.total": ("02060000", "0.987", ""),
    "frequency": ("02800002", "50.01", "Hz"),
    "demand.active.import.total.max": ("01010000", "12.3456", "kW"),
}


@pytest.fixture
def oracle(pty_pair):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "oracles" / "dlt645_meter.py"), str(pty_pair.a), ADDRESS, json.dumps(VALUES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    yield pty_pair.b
    proc.kill()
    proc.wait()


def line(port):
    return ["--port", str(port), "--baud", "2400", "--parity", "none", "--protocol", "dlt645-2007"]


def run(meterd, *args, timeout=60):
    return subprocess.run([str(meterd), *args], capture_output=True, text=True, timeout=timeout)


def test_read_gives_every_value_the_oracle_holds_to_the_digit(meterd, oracle):
    out = run(
        meterd, "read", *line(oracle), "--address", ADDRESS, "--timeout", "3s", "--json",
        "--quantity", *EXPECTED.keys(),
    )
    assert out.returncode == 0, out.stderr
    batch = json.loads(out.stdout)
    assert batch["schema"] == "meterd.reading.v1"
    assert batch["meter"] == ADDRESS
    by_quantity = {v["quantity"]: v for v in batch["values"]}
    assert set(by_quantity) == set(EXPECTED)
    for quantity, (di, text, unit) in EXPECTED.items():
        v = by_quantity[quantity]
        assert v["quality"] == "good", v
        assert v["unit"] == unit, v
        assert v["source"] == f"dlt645:{di}", v
    # The raw JSON text of each value: the meter's digits (trailing zeros included).
    objects = out.stdout.split('"quantity": ')[1:]
    for chunk in objects:
        quantity = json.loads(chunk.split(",", 1)[0])
        text = EXPECTED[quantity][1]
        assert f'"value": {text},' in chunk, f"{quantity}: expected {text} in {chunk}"
    assert by_quantity["demand.active.import.total.max"]["meter_time"].startswith("2024-05-06T07:08")
    # One evidence frame per reply, each from the oracle's address (low byte first on the wire).
    assert len(batch["frames"]) == len(EXPECTED)
    assert all(f.startswith("68 12 90 78 56 34 12 68 91") for f in batch["frames"]), batch["frames"]


def test_read_table_shows_the_same_digits(meterd, oracle):
    out = run(
        meterd, "read", *line(oracle), "--address", ADDRESS, "--timeout", "3s",
        "--quantity", "energy.active.combined.total", "current.l1",
    )
    assert out.returncode == 0, out.stderr
    rows = {r.split()[0]: r.split()[1:] for r in out.stdout.splitlines()[2:]}
    assert rows["energy.active.combined.total"][:3] == ["1234.56", "kWh", "good"]
    assert rows["current.l1"][:3] == ["-1.234", "A", "good"]


def test_a_wrong_address_is_not_read_as_the_oracles_values(meterd, oracle):
    # Deviation 5 of the oracle: a wrong address gets an error reply (ERR 01) instead of silence.
    out = run(
        meterd, "read", *line(oracle), "--address", "123456789011", "--timeout", "3s", "--json",
        "--quantity", "energy.active.combined.total",
    )
    # An error reply is an answer, but with every value bad the read failed: exit 1, the
    # reading still printed.
    assert out.returncode == 1, out.stderr
    assert "every value is bad" in out.stderr, out.stderr
    (v,) = json.loads(out.stdout)["values"]
    assert v["quality"] == "bad", v
    assert v.get("value") is None, v
    assert v["reason"].startswith("meter error 01"), v


def test_scan_finds_the_oracle_by_read_address(meterd, oracle):
    out = run(meterd, "scan", *line(oracle), "--timeout", "3s", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [f["address"] for f in found] == [ADDRESS], found
    assert found[0]["answer"] == "read-address"


def test_scan_by_address_range_tells_the_oracle_from_its_error_replies(meterd, oracle):
    out = run(meterd, "scan", *line(oracle), "--timeout", "3s", "--json", "--addresses", "123456789011-123456789013")
    assert out.returncode == 0, out.stderr
    found = {f["address"]: f["answer"] for f in json.loads(out.stdout)}
    assert found[ADDRESS] == "present (answered a read)", found
    # The oracle's deviation 5 (error reply to a wrong address, where a real meter is silent):
    # meterd reports those as error replies, never as a read.
    for other in ("123456789011", "123456789013"):
        assert found[other].startswith("present (error reply 01"), found
