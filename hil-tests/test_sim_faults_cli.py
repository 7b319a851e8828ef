"""Every fault of meterd's simulator, seen through `meterd read` and `meterd trace` on a pty the
simulator makes (`serial = "pty"`), with the ground-truth log as the referee.

The Rust tests cover the same faults against a scripted fake (tests/bus_task.rs) and on the
simulator's wire (tests/sim.rs); here the real binary meets the real simulator: silence is a
one-line error and exit 1, broken frames (corrupt byte, bad checksum, noise) are skipped,
shown and retried and never published, an echoing adapter is handled with `timing.echo` (and
named, with that hint, without it), and abnormal replies are bad values with the meter's reason
(a read whose every value is bad exits 1). Late replies are covered in process
by tests/noisy_bus.rs (every value checked against the truth log).
"""
import json
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for

METERS = {
    "000000000001": "no_reply = { every = 1 }",
    "000000000002": "corrupt = { every = 2 }",
    "000000000003": "bad_checksum = { every = 2 }",
    "000000000004": "noise = { every = 1, bytes = 5 }",
    "000000000005": "echo = { every = 1 }",
    "000000000006": "abnormal = { every = 1, code = 2 }",
}


@pytest.fixture
def sim(meterd, tmp_path):
    link = tmp_path / "ttySIM"
    text = f'[[port]]\nname = "bus"\nserial = "pty"\nlink = "{link}"\nbaud = 2400\nparity = "none"\n'
    for address, fault in METERS.items():
        text += (
            f'[[port.meter]]\nprotocol = "dlt645-2007"\naddress = "{address}"\n'
            f'profile = "dlt645-single-phase"\nfaults = {{ {fault} }}\n'
        )
    text += '[[port.meter]]\nprotocol = "modbus-rtu"\nunit = 7\nprofile = "generic-modbus"\n'
    text += "faults = { abnormal = { every = 1, code = 6 } }\n"
    conf = tmp_path / "sim.toml"
    conf.write_text(text)
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [str(meterd), "simulate", "--config", str(conf), "--truth", str(truth)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(link.exists, 10, "simulator pty")
    yield {"link": link, "truth": truth, "dir": tmp_path}
    proc.terminate()
    proc.wait(10)


def truth(sim, meter):
    lines = [json.loads(l) for l in sim["truth"].read_text().splitlines() if l.strip()]
    return [l for l in lines if l["meter"] == meter]


def read(meterd, sim, *args):
    return subprocess.run(
        [str(meterd), "read", "--port", str(sim["link"]), "--baud", "2400", "--parity", "none",
         "--timeout", "300ms", "--retries", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def dlt_read_json(meterd, sim, address, *quantities):
    out = read(meterd, sim, "--protocol", "dlt645-2007", "--address", address, "--json", "--quantity", *quantities)
    assert out.returncode == 0, out.stderr
    return out.stdout, json.loads(out.stdout)


def value_texts(stdout):
    texts = {}
    for chunk in stdout.split('"quantity": ')[1:]:
        quantity = json.loads(chunk.split(",", 1)[0])
        texts[quantity] = chunk.split('"value": ', 1)[1].split(",", 1)[0].strip() if '"value": ' in chunk else None
    return texts


def assert_values_are_the_truth(sim, meter, stdout):
    """Each published value is the one of the last *valid* reply the simulator sent for it."""
    latest = {}
    for line in truth(sim, meter):
        if line["valid"]:
            for v in line["values"]:
                latest[v["quantity"]] = v["value"]
    texts = value_texts(stdout)
    assert texts, stdout
    for quantity, text in texts.items():
        assert text == latest[quantity], f"{meter} {quantity}: read {text}, truth {latest.get(quantity)}"


QUANTITIES = ["energy.active.combined.total", "voltage.l1", "current.l1", "power.active.total", "frequency"]


def test_no_reply_is_one_line_and_exit_1(meterd, sim):
    out = read(meterd, sim, "--protocol", "dlt645-2007", "--address", "000000000001", "--quantity", "voltage.l1")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr == (
        "meterd read: no answer from meter 000000000001: no reply within 300ms (2 attempts); "
        "check the meter's address, the protocol edition and the line settings (baud, parity)\n"
    )
    assert truth(sim, "000000000001") == [], "a silent meter sends nothing"


@pytest.mark.parametrize("meter,fault", [("000000000002", "corrupt"), ("000000000003", "bad_checksum")])
def test_broken_frames_are_retried_and_never_published(meterd, sim, meter, fault):
    stdout, batch = dlt_read_json(meterd, sim, meter, *QUANTITIES)
    assert all(v["quality"] == "good" for v in batch["values"]), batch["values"]
    # The simulator logs a reply just after its last byte: wait for the last line.
    wait_for(lambda: len(truth(sim, meter)) >= 9, 5, "truth log")
    lines = truth(sim, meter)
    broken = [l for l in lines if fault in l["faults"]]
    assert broken and all(not l["valid"] for l in broken), lines
    # every 2nd reply broken, one retry each: 5 good replies and 4 broken ones in between
    assert len(lines) == 9 and len(broken) == 4, [l["faults"] for l in lines]
    assert_values_are_the_truth(sim, meter, stdout)
    # No broken frame ends up as evidence.
    valid = {l["response"] for l in lines if l["valid"]}
    assert set(batch["frames"]) <= valid


def test_noise_before_each_reply_is_skipped(meterd, sim):
    stdout, batch = dlt_read_json(meterd, sim, "000000000004", *QUANTITIES)
    assert all(v["quality"] == "good" for v in batch["values"]), batch["values"]
    wait_for(lambda: len(truth(sim, "000000000004")) >= 5, 5, "truth log")
    lines = truth(sim, "000000000004")
    assert len(lines) == 5 and all(l["faults"] == ["noise"] and l["valid"] for l in lines), lines
    assert_values_are_the_truth(sim, "000000000004", stdout)


def test_abnormal_replies_are_bad_with_the_meters_reason(meterd, sim):
    # Every value bad: the reading is still printed (the evidence), and the read failed: exit 1.
    out = read(meterd, sim, "--protocol", "dlt645-2007", "--address", "000000000006", "--json",
               "--quantity", "voltage.l1")
    assert out.returncode == 1, out.stderr
    assert out.stderr == ("meterd read: meter 000000000006 answered, but every value is bad "
                          "(first: meter error 02: no requested data)\n"), out.stderr
    (v,) = json.loads(out.stdout)["values"]
    assert v["quality"] == "bad" and v.get("value") is None, v
    assert v["reason"] == "meter error 02: no requested data", v
    out = read(meterd, sim, "--protocol", "modbus-rtu", "--unit", "7", "--profile", "generic-modbus", "--json")
    assert out.returncode == 1, out.stderr
    assert "every value is bad" in out.stderr, out.stderr
    values = json.loads(out.stdout)["values"]
    assert len(values) == 6
    assert all(v["quality"] == "bad" and v["reason"] == "exception 06 server device busy" for v in values), values


def trace(meterd, sim, address, echo):
    conf = sim["dir"] / f"gw-{address}-{echo}.toml"
    conf.write_text(
        f"""gateway = "gw"
[[bus]]
name = "b"
transport = "serial"
port = "{sim['link']}"
baud = 2400
parity = "none"
timing = {{ response_timeout = "300ms", turnaround = "1ms", retries = 1, echo = {str(echo).lower()} }}
[[bus.meter]]
protocol = "dlt645-2007"
address = "{address}"
profile = "dlt645-single-phase"
"""
    )
    out = subprocess.run(
        [str(meterd), "trace", "--config", str(conf), "--duration", "5s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_trace_shows_broken_frames_skipped_and_retried(meterd, sim):
    t = trace(meterd, sim, "000000000002", False)
    assert " b 000000000002 rx? " in t and "checksum mismatch" in t, t
    assert " --  retry 1 of read " in t, t
    assert "== reading 000000000002: 13 values, 0 bad" in t, t


def test_trace_shows_noise_skipped(meterd, sim):
    t = trace(meterd, sim, "000000000004", False)
    assert "skipped: noise" in t, t
    assert "== reading 000000000004: 13 values, 0 bad" in t, t


def test_an_echoing_adapter_without_timing_echo_is_named(meterd, sim):
    # The echo is one line naming the setting, not noise skipped byte by byte.
    t = trace(meterd, sim, "000000000005", False)
    echoes = [l for l in t.splitlines() if " rx? " in l and "our own request came back" in l]
    sent = [l for l in t.splitlines() if " tx " in l]
    assert echoes and len(echoes) == len(sent), t
    assert all("set `echo = true`" in l for l in echoes), echoes
    assert "skipped: noise" not in t, t
    assert "== reading 000000000005: 13 values, 0 bad" in t, t


def test_an_echoing_adapter_with_timing_echo(meterd, sim):
    t = trace(meterd, sim, "000000000005", True)
    assert "== reading 000000000005: 13 values, 0 bad" in t, t
    assert "retry" not in t, t
    lines = truth(sim, "000000000005")
    assert lines and all(l["faults"] == ["echo"] and l["echo"] == l["request"] for l in lines), lines
