"""`meterd read` and `meterd scan` against a pymodbus 3.16.1 server (an independent Modbus
implementation, hil-tests/oracles/modbus_server.py) over Modbus TCP on loopback and Modbus RTU
on a pty pair.

The server holds raw register words computed here; the expected reading is computed here too,
independently of meterd: integers scaled exactly in decimal (Python `Decimal`), float32 values
in their shortest round-trip decimal form. Registers the server does not hold are answered by
pymodbus with exception 02, which meterd must report as bad with that reason.
"""
import json
import struct
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import free_port, port_open, wait_for

HERE = Path(__file__).resolve().parent


def u32_abcd(v):
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]


def i32_cdab(v):
    u = v & 0xFFFFFFFF
    return [u & 0xFFFF, u >> 16]


def f32_abcd(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def f32_text(x):
    """The shortest decimal that reads back as the same float32, written without exponent."""
    bits = struct.pack(">f", x)
    for digits in range(1, 10):
        text = f"{struct.unpack('>f', bits)[0]:.{digits}g}"
        if struct.pack(">f", float(text)) == bits:
            d = Decimal(text)
            return format(d.normalize(), "f") if d == d.to_integral() else format(d, "f")
    raise AssertionError(x)


def scaled(raw, scale):
    return str(Decimal(raw) * Decimal(scale))


def in_kilo(text):
    """A float32's shortest text in W (var, VA) as published in kW: the point moved three places
    in the decimal text, exactly, trailing zeros of the fraction dropped (docs/quantities.md)."""
    out = format(Decimal(text).scaleb(-3), "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


# generic-modbus (config/profiles/generic-modbus.toml): holding registers, integers, exact scale.
GENERIC_RAW = {
    "energy.active.import.total": (0, "u32", 123456789, "0.01"),
    "energy.active.export.total": (2, "u32", 4567, "0.01"),
    "voltage.l1": (10, "u16", 2301, "0.1"),
    "current.l1": (11, "u16", 512, "0.01"),
    "power.active.total": (12, "i32cdab", -1500, "0.001"),
    "frequency": (20, "u16", 5002, "0.01"),
}


def generic_words():
    regs = [0] * 21  # 0..20: the planner reads the gaps too (gap_fill = 8)
    for reg, kind, raw, _ in GENERIC_RAW.values():
        words = {"u16": lambda v: [v], "u32": u32_abcd, "i32cdab": i32_cdab}[kind](raw)
        regs[reg : reg + len(words)] = words
    return regs


GENERIC_EXPECTED = {q: scaled(raw, scale) for q, (_, _, raw, scale) in GENERIC_RAW.items()}

# The published unit of each quantity read here (docs/quantities.md, one unit per quantity).
UNITS = {"energy": "kWh", "voltage": "V", "current": "A", "power.active": "kW", "frequency": "Hz"}


def unit_of(quantity):
    return next(u for family, u in UNITS.items() if quantity.startswith(family))


# eastron-sdm630: input registers, float32 ABCD, power in W. The server holds 0x00..0x11 (nine values);
# the planner's second read (0x34.., totals and energies) hits registers it does not hold.
SDM_VALUES = {
    "voltage.l1": 230.1,
    "voltage.l2": 229.87,
    "voltage.l3": 231.0,
    "current.l1": 5.123,
    "current.l2": 0.1,
    "current.l3": 12.5,
    "power.active.l1": 1178.86,
    "power.active.l2": -3.25,
    "power.active.l3": 98765.43,
}
SDM_MISSING = [
    "power.active.total",
    "power.apparent.total",
    "power.reactive.total",
    "power_factor.total",
    "frequency",
    "energy.active.import.total",
    "energy.active.export.total",
    "energy.reactive.import.total",
    "energy.reactive.export.total",
]


def sdm_words():
    words = []
    for x in SDM_VALUES.values():
        words += f32_abcd(x)
    return words


REGISTER_MAP = {
    "1": {"hr": {"0": generic_words()}},
    # Unit 2: the generic map but registers 14.. missing, so the one coalesced read fails.
    "2": {"hr": {"0": generic_words()[:14]}},
    "3": {"ir": {"0": sdm_words()}},
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
def tcp_server():
    port = free_port()
    proc = start_server("--tcp", str(port))
    wait_for(lambda: port_open(port), 10, "pymodbus TCP server")
    yield ["--tcp", f"127.0.0.1:{port}", "--protocol", "modbus-tcp"]
    proc.kill()
    proc.wait()


@pytest.fixture
def rtu_server(pty_pair):
    proc = start_server("--rtu", str(pty_pair.a), "--baud", "9600")
    yield ["--port", str(pty_pair.b), "--baud", "9600", "--parity", "none", "--protocol", "modbus-rtu"]
    proc.kill()
    proc.wait()


def read(meterd, target, unit, profile, code=0):
    """`meterd read --json`, which must exit `code` (1 when every value is bad)."""
    out = subprocess.run(
        [str(meterd), "read", *target, "--unit", str(unit), "--profile", profile, "--timeout", "2s", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == code, out.stderr
    return out.stdout, {v["quantity"]: v for v in json.loads(out.stdout)["values"]}


def value_texts(stdout):
    """quantity -> the raw JSON text of its value (digits as printed, not as parsed)."""
    texts = {}
    for chunk in stdout.split('"quantity": ')[1:]:
        quantity = json.loads(chunk.split(",", 1)[0])
        if '"value": ' in chunk:
            texts[quantity] = chunk.split('"value": ', 1)[1].split(",", 1)[0].strip()
    return texts


def check_generic(meterd, target):
    stdout, values = read(meterd, target, 1, "generic-modbus")
    assert set(values) == set(GENERIC_EXPECTED)
    texts = value_texts(stdout)
    for quantity, text in GENERIC_EXPECTED.items():
        assert values[quantity]["quality"] == "good", values[quantity]
        assert texts[quantity] == text, f"{quantity}: {texts[quantity]} != {text}"
        assert values[quantity]["unit"] == unit_of(quantity), values[quantity]


def check_unmapped(meterd, target):
    # Every value bad: the reading is printed as evidence, and the read failed (exit 1).
    _, values = read(meterd, target, 2, "generic-modbus", code=1)
    assert set(values) == set(GENERIC_EXPECTED)
    for v in values.values():
        assert v["quality"] == "bad", v
        assert v.get("value") is None, v
        assert v["reason"] == "exception 02 illegal data address", v


def check_sdm630(meterd, target):
    stdout, values = read(meterd, target, 3, "eastron-sdm630")
    texts = value_texts(stdout)
    for quantity, x in SDM_VALUES.items():
        assert values[quantity]["quality"] == "good", values[quantity]
        # The meter reports W; meterd publishes kW, the float's digits with the point moved.
        want = in_kilo(f32_text(x)) if quantity.startswith("power.") else f32_text(x)
        assert texts[quantity] == want, f"{quantity}: {texts[quantity]} != {want}"
        assert values[quantity]["unit"] == unit_of(quantity), values[quantity]
    for quantity in SDM_MISSING:
        assert values[quantity]["quality"] == "bad", values[quantity]
        assert values[quantity]["reason"] == "exception 02 illegal data address", values[quantity]


def test_f32_text_is_the_shortest_form():
    assert f32_text(230.1) == "230.1"
    assert f32_text(231.0) == "231"
    assert f32_text(98765.43) == "98765.43"
    assert GENERIC_EXPECTED["power.active.total"] == "-1.500"
    assert in_kilo(f32_text(1178.86)) == "1.17886"
    assert in_kilo(f32_text(-3.25)) == "-0.00325"
    assert in_kilo("1200") == "1.2"


def test_modbus_tcp_integer_map_reads_exactly(meterd, tcp_server):
    check_generic(meterd, tcp_server)


def test_modbus_tcp_unmapped_registers_are_bad_with_the_exception(meterd, tcp_server):
    check_unmapped(meterd, tcp_server)


def test_modbus_tcp_sdm630_float32_map(meterd, tcp_server):
    check_sdm630(meterd, tcp_server)


def test_modbus_tcp_silent_unit_is_one_line_and_exit_1(meterd, tcp_server):
    out = subprocess.run(
        [str(meterd), "read", *tcp_server, "--unit", "9", "--profile", "generic-modbus", "--timeout", "300ms"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "no answer from meter" in out.stderr and "no reply within 300ms" in out.stderr, out.stderr


def test_modbus_rtu_on_a_pty_reads_all_three_maps(meterd, rtu_server):
    check_generic(meterd, rtu_server)
    check_unmapped(meterd, rtu_server)
    check_sdm630(meterd, rtu_server)


@pytest.mark.parametrize("server", ["rtu_server", "tcp_server"])
def test_scan_sweeps_units(meterd, server, request):
    # On RTU over a pty, and through pymodbus' TCP server (where silent units 4-6 each cost a
    # new connection). Unit 3 holds no holding registers: its exception reply to FC03 still
    # says "present".
    target = request.getfixturevalue(server)
    out = subprocess.run(
        [str(meterd), "scan", *target, "--units", "1-6", "--timeout", "300ms", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [f["address"] for f in found] == ["1", "2", "3"], found
    assert "exception" in found[2]["answer"], found
    if server == "tcp_server":
        # The evidence is pymodbus' own reply ADU: MBAP (protocol 0), then the unit id.
        for f, unit in zip(found, ["01", "02", "03"]):
            frame = f["frame"].split()
            assert frame[2:4] == ["00", "00"] and frame[6] == unit, f
