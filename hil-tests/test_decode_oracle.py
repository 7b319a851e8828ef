"""`meterd decode` against frames made by an independent DL/T 645 implementation.

The PyPI `dlt645==3.2.0` meter simulator answers read requests over a pty pair; its replies
(bytes it encoded itself) are decoded by `meterd decode --json`, and every value must be the
number the simulator was given, to the digit.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

HERE = Path(__file__).resolve().parent
ADDRESS = "123456789012"
VALUES = {
    "00000000": 1234.56,
    "00010000": 987.65,
    "00010100": 100.01,
    "02010100": 220.5,
    "02020100": -1.234,
    "02030000": 1.5,
    "02060000": 0.987,
    "02800002": 50.01,
    "01010000": [12.3456, "2024-05-06T07:08"],
}
EXPECTED = {
    "00000000": ("energy.active.combined.total", "1234.56", "kWh"),
    "00010000": ("energy.active.import.total", "987.65", "kWh"),
    "00010100": ("energy.active.import.t1", "100.01", "kWh"),
    "02010100": ("voltage.l1", "220.5", "V"),
    "02020100": ("current.l1", "-1.234", "A"),
    "02030000": ("power.active.total", "1.5000", "kW"),
    "02060000": ("power_factor.total", "0.987", ""),
    "02800002": ("frequency", "50.01", "Hz"),
    "01010000": ("demand.active.import.total.max", "12.3456", "kW"),
}


def read_request(address: str, di: str) -> bytes:
    """A read-data (11) request, built here independently of meterd."""
    addr = bytes.fromhex(address)[::-1]
    data = bytes((b + 0x33) & 0xFF for b in bytes.fromhex(di)[::-1])
    body = bytes([0x68]) + addr + bytes([0x68, 0x11, len(data)]) + data
    return b"\xFE\xFE\xFE\xFE" + body + bytes([sum(body) & 0xFF, 0x16])


def exchange(port: serial.Serial, request: bytes) -> bytes:
    port.reset_input_buffer()
    port.write(request)
    deadline = time.monotonic() + 3.0
    out = b""
    while time.monotonic() < deadline:
        chunk = port.read(256)
        if chunk:
            out += chunk
        elif out:
            break
    return out


@pytest.fixture
def oracle_meter(pty_pair):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "oracles" / "dlt645_meter.py"), str(pty_pair.a), ADDRESS, json.dumps(VALUES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    yield pty_pair
    proc.kill()
    proc.wait()


def decode_json(meterd, raw: bytes):
    out = subprocess.run([str(meterd), "decode", "--json", raw.hex(" ")], capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def test_every_value_the_oracle_encodes_decodes_to_the_digit(meterd, oracle_meter):
    with serial.Serial(str(oracle_meter.b), 2400, timeout=0.2) as port:
        for di, (quantity, text, unit) in EXPECTED.items():
            reply = exchange(port, read_request(ADDRESS, di))
            assert reply, f"oracle did not answer DI {di}"
            rc, out, err = decode_json(meterd, reply)
            assert rc == 0, f"{di}: {err}"
            # Compare the raw JSON text: the number must be the meter's digits, not a float's.
            assert f'"value": {text}' in out, f"{di}: expected {text} in\n{out}"
            decoded = json.loads(out)
            assert decoded["protocol"] == "dlt645-2007"
            assert decoded["address"] == ADDRESS
            assert decoded["di"] == di
            v = decoded["values"][0]
            assert (v["quantity"], v["unit"]) == (quantity, unit)
            assert decoded["checksum"]["ok"] is True
            if di == "01010000":
                assert v["meter_time"].startswith("2024-05-06T07:08"), v


def test_the_oracles_error_reply_decodes_as_no_requested_data(meterd, oracle_meter):
    with serial.Serial(str(oracle_meter.b), 2400, timeout=0.2) as port:
        reply = exchange(port, read_request(ADDRESS, "0201FF00"))  # the oracle has no blocks
    rc, out, err = decode_json(meterd, reply)
    assert rc == 0, err
    decoded = json.loads(out)
    assert decoded["control"]["abnormal"] is True
    assert "no requested data" in decoded["error"]
