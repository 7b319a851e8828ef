"""mbpoll (Debian's Modbus master, built on libmodbus) reads meterd's own simulator over Modbus
TCP and over Modbus RTU on a pty the simulator makes: every register word mbpoll prints must be
the word the simulator's ground-truth log says it sent for that exchange, and mbpoll's own
32-bit decodes must be the values the truth log says those words encode. The simulator is
checked by a third party here, so the gateway's tests against it mean something.
"""
import json
import math
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, port_open, wait_for


@pytest.fixture
def simulator(meterd, tmp_path):
    port = free_port()
    link = tmp_path / "ttySIM"
    conf = tmp_path / "sim.toml"
    conf.write_text(
        f"""
[[port]]
name = "mtcp"
modbus_tcp = "127.0.0.1:{port}"
[[port.meter]]
protocol = "modbus-tcp"
unit = 1
profile = "generic-modbus"
seed = 5
[[port.meter]]
protocol = "modbus-tcp"
unit = 2
profile = "eastron-sdm630"
seed = 6

[[port]]
name = "rtu"
serial = "pty"
link = "{link}"
baud = 9600
parity = "none"
[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "generic-modbus"
seed = 7
[[port.meter]]
protocol = "modbus-rtu"
unit = 4
profile = "eastron-sdm630"
seed = 8
"""
    )
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [str(meterd), "simulate", "--config", str(conf), "--truth", str(truth)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: port_open(port) and link.exists(), 10, "simulator ports")
    yield {"port": port, "link": link, "truth": truth}
    proc.terminate()
    proc.wait(10)


def truth_lines(path: Path):
    # Complete lines only: the simulator may be writing the next one.
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(l) for l in complete if l.strip()]


def mbpoll(*args):
    out = subprocess.run(["mbpoll", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    values = {}
    for row in out.stdout.splitlines():
        if row.startswith("["):
            ref, value = row.split(":", 1)
            values[int(ref.strip("[]"))] = value.strip()
    return values


def read_words(target, unit, table, start, count):
    """mbpoll's words (hex), and the truth log line of that exchange."""
    before = len(truth_lines(target["truth"])) if target["truth"].exists() else 0
    words = mbpoll(*target["how"], "-a", str(unit), "-t", f"{table}:hex", "-r", str(start), "-0", "-c", str(count), "-1", "-o", "2", target["where"])
    # The simulator logs a reply once it has been written, so mbpoll can have it (and exit)
    # an instant before its truth line is there.
    new_lines = lambda: truth_lines(target["truth"])[before:] if target["truth"].exists() else []
    wait_for(lambda: new_lines(), 5, "the exchange's truth log line")
    time.sleep(0.2)  # and no second line follows
    lines = new_lines()
    assert len(lines) == 1, lines
    return [int(words[start + i], 16) for i in range(count)], lines[0]


def words_in(line):
    data = bytes.fromhex(line["response"])
    if line["framing"] == "rtu":
        data = data[1:-2]  # unit ... CRC
    function, count, payload = data[0], data[1], data[2:]
    assert function in (3, 4) and count == len(payload), line
    return [int.from_bytes(payload[i : i + 2], "big") for i in range(0, count, 2)]


def targets(sim):
    tcp = {"how": ["-m", "tcp", "-p", str(sim["port"])], "where": "127.0.0.1", "truth": sim["truth"]}
    rtu = {"how": ["-m", "rtu", "-b", "9600", "-P", "none"], "where": str(sim["link"]), "truth": sim["truth"]}
    return {"tcp": (tcp, 1, 2), "rtu": (rtu, 1, 4)}


@pytest.mark.parametrize("side", ["tcp", "rtu"])
def test_mbpoll_reads_the_words_the_truth_log_says_were_sent(simulator, side):
    target, generic_unit, sdm_unit = targets(simulator)[side]
    # generic-modbus: holding registers 0..20 (integers).
    words, line = read_words(target, generic_unit, 4, 0, 21)
    assert line["valid"] and line["faults"] == [], line
    assert words == words_in(line)
    truth = {v["quantity"]: v["value"] for v in line["values"]}
    # The truth log's decoded values are what those words mean under the profile.
    assert f"{((words[0] << 16) | words[1]) / 100:.2f}" == truth["energy.active.import.total"]
    assert f"{words[10] / 10:.1f}" == truth["voltage.l1"]
    assert f"{words[20] / 100:.2f}" == truth["frequency"]
    # eastron-sdm630: input registers, float32 ABCD.
    words, line = read_words(target, sdm_unit, 3, 0, 6)
    assert words == words_in(line)
    assert len(line["values"]) == 3, line


@pytest.mark.parametrize("side", ["tcp", "rtu"])
def test_mbpoll_float_decode_matches_the_truth_log(simulator, side):
    target, _, sdm_unit = targets(simulator)[side]
    before = len(truth_lines(simulator["truth"])) if simulator["truth"].exists() else 0
    floats = mbpoll(*target["how"], "-a", str(sdm_unit), "-t", "3:float", "-B", "-r", "0", "-0", "-c", "3", "-1", "-o", "2", target["where"])
    (line,) = truth_lines(simulator["truth"])[before:]
    truth = [float(v["value"]) for v in line["values"]]
    assert len(truth) == 3
    # mbpoll prints each float (two registers: references 0, 2, 4) with printf's %g, six
    # significant digits: it must agree with the truth value to within that rounding.
    assert sorted(floats) == [0, 2, 4], floats
    for i, expected in enumerate(truth):
        got = float(floats[2 * i])
        sixth_digit = 10 ** (math.floor(math.log10(abs(expected))) - 5)
        assert abs(got - expected) <= 0.6 * sixth_digit, (got, expected, floats)


def test_mbpoll_gets_silence_from_a_unit_the_simulator_lacks(simulator):
    target, _, _ = targets(simulator)["rtu"]
    out = subprocess.run(
        ["mbpoll", *target["how"], "-a", "9", "-t", "4", "-r", "0", "-0", "-c", "1", "-1", "-o", "0.3", target["where"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "timed out" in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
