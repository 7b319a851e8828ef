"""`meterd read --register` and `meterd scan`'s Modbus identification against a pymodbus 3.16.1
server (hil-tests/oracles/modbus_server.py), over Modbus TCP and over Modbus RTU on a pty read
with `--line 9600-8N1`.

The server holds raw words computed here with Python's `struct`, and the expected values are
computed here too, independently of meterd: each value in each word order (abcd, cdab, badc,
dcba), floats in their shortest round-trip decimal form. For the scan, unit 1 holds an Eastron
SDM630's meter code (0x0070 at holding 0xFC02) and serial number (0xFC00), unit 2 a generic
integer map with neither.
"""
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, port_open, wait_for
from test_read_modbus_oracle import f32_text

HERE = Path(__file__).resolve().parent

ORDERS = ["abcd", "cdab", "badc", "dcba"]


def words(fmt, x, order):
    """The registers holding `x` packed big-endian by struct `fmt`, laid out in `order`."""
    raw = struct.pack(">" + fmt, x)
    regs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("cdab", "dcba"):
        regs.reverse()
    if order in ("badc", "dcba"):
        regs = [r[::-1] for r in regs]
    return [int.from_bytes(r, "big") for r in regs]


# (type, struct format, value, expected text): one block per word order at 100 + 16 * i.
VALUES = [
    ("f32", "f", 229.8, f32_text(229.8)),
    ("i32", "i", -123456, "-123456"),
    ("u32", "I", 3_000_000_123, "3000000123"),
    ("u64", "Q", 12_345_678_901_234, "12345678901234"),
    ("f64", "d", -0.1, "-0.1"),
]
BASE = 100


def block(order):
    out = []
    for _, fmt, x, _ in VALUES:
        out += words(fmt, x, order)
    return out


def specs():
    """(spec, expected value text) for every value in every order."""
    out = []
    for i, order in enumerate(ORDERS):
        address = BASE + 32 * i
        for ty, fmt, _, want in VALUES:
            out.append((f"fc03:{address}:{ty}:{order}", want))
            address += struct.calcsize(fmt) // 2
    return out


SDM630_SERIAL = 123456
REGISTER_MAP = {
    # An SDM630: meter code 0x0070 in the first register of the two at 0xFC02, serial at 0xFC00,
    # and the start of its float map (voltage.l1) in the input registers.
    "1": {
        "hr": {str(0xFC00): [SDM630_SERIAL >> 16, SDM630_SERIAL & 0xFFFF, 0x0070, 0]},
        "ir": {"0": words("f", 230.1, "abcd")},
    },
    # A generic integer map: holding registers from 0, no Eastron registers, no input registers.
    "2": {"hr": {"0": list(range(1, 33))}},
    # Raw values in every order, an i16 and a u16.
    "3": {
        "hr": {
            str(BASE + 32 * i): block(order) for i, order in enumerate(ORDERS)
        }
        | {"90": words("h", -2, "abcd") + [0xBEEF]},
    },
}


def start_server(*where):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "oracles" / "modbus_server.py"), *where, json.dumps(REGISTER_MAP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def tcp_target():
    port = free_port()
    proc = start_server("--tcp", str(port))
    wait_for(lambda: port_open(port), 10, "pymodbus TCP server")
    yield ["--tcp", f"127.0.0.1:{port}", "--protocol", "modbus-tcp"]
    proc.kill()
    proc.wait()


@pytest.fixture
def rtu_target(pty_pair):
    proc = start_server("--rtu", str(pty_pair.a), "--baud", "9600")
    yield ["--port", str(pty_pair.b), "--line", "9600-8N1", "--protocol", "modbus-rtu"]
    proc.kill()
    proc.wait()


def run(meterd, *args):
    return subprocess.run([str(meterd), *args], capture_output=True, text=True, timeout=120)


def test_words_are_laid_out_as_named():
    # 229.8f32 = 0x4365CCCD
    assert words("f", 229.8, "abcd") == [0x4365, 0xCCCD]
    assert words("f", 229.8, "cdab") == [0xCCCD, 0x4365]
    assert words("f", 229.8, "badc") == [0x6543, 0xCDCC]
    assert words("f", 229.8, "dcba") == [0xCDCC, 0x6543]


@pytest.mark.parametrize("target", ["tcp_target", "rtu_target"])
def test_read_register_gives_each_value_in_each_word_order(meterd, target, request):
    where = request.getfixturevalue(target)
    # The server's coils and discrete inputs hold one bit, off, at 60000.
    wanted = specs() + [
        ("fc03:90:i16", "-2"),
        ("fc03:0x005B:u16", str(0xBEEF)),
        ("fc01:60000:bit", "0"),
        ("fc02:60000:bit", "0"),
    ]
    args = [a for spec, _ in wanted for a in ("--register", spec)]
    out = run(meterd, "read", *where, "--unit", "3", "--timeout", "2s", *args, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == len(wanted)
    # The value's JSON text, as printed (not as Python parses it).
    texts = [chunk.split('"value": ', 1)[1].split(",", 1)[0].strip() for chunk in out.stdout.split('"register": ')[1:]]
    for row, text, (spec, want) in zip(rows, texts, wanted):
        assert text == want, f"{spec}: {text} != {want} ({row})"
    # The raw words are the server's.
    assert rows[0]["raw"] == words("f", 229.8, "abcd")


@pytest.mark.parametrize("target", ["tcp_target", "rtu_target"])
def test_scan_names_the_profile_by_its_identification_registers(meterd, target, request):
    where = request.getfixturevalue(target)
    out = run(meterd, "scan", *where, "--units", "1-3", "--timeout", "500ms", "--json")
    assert out.returncode == 0, out.stderr
    found = {f["address"]: f for f in json.loads(out.stdout)}
    sdm = found["1"]["identity"]
    assert sdm["profile"] == "eastron-sdm630", sdm
    assert {"name": "meter code", "value": "112 (0x0070)"} in sdm["facts"], sdm
    assert {"name": "serial number", "value": f"{SDM630_SERIAL} ({SDM630_SERIAL:#06x})"} in sdm["facts"], sdm
    generic = found["2"]["identity"]
    assert "profile" not in generic, generic
    assert generic["candidates"] == ["generic-modbus"], generic
