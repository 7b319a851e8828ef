"""The tariff-sum check of `meterd read` against the PyPI `dlt645==3.2.0` meter simulator.

The oracle is a four-tariff meter whose total is the sum of its tariffs, as a real meter's is.
A profile that reads only some of the tariffs says nothing about the meter's total, so the total
must stay `good` (it was marked suspect: "tariff registers sum to … total says …"). The sum is
compared when the batch holds every tariff register of the meter: here, by reading the meter's
own tariff count (04000204) with all four tariffs. (The oracle has no block DIs, so the other
way, one "total + tariffs" block reply, is covered by the Rust tests:
`ingest::validation::tests::tariffs_of_one_block_reply_must_add_up_to_the_total_within_rounding`
and `meter::tests::a_total_and_tariffs_block_says_the_group_was_read_whole`.)
"""
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ADDRESS = "123456789012"
TARIFFS = {"00010100": "100.01", "00010200": "200.02", "00010300": "300.03", "00010400": "400.04"}
TOTAL = str(sum(Decimal(v) for v in TARIFFS.values()))  # 1000.10


def start_oracle(port, total, tariff_count="04"):
    values = {"00010000": float(total), **{di: float(v) for di, v in TARIFFS.items()}, "04000204": tariff_count}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "oracles" / "dlt645_meter.py"), str(port), ADDRESS, json.dumps(values)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def oracle(pty_pair):
    procs = []

    def start(total):
        procs.append(start_oracle(pty_pair.a, total))
        return pty_pair.b

    yield start
    for p in procs:
        p.kill()
        p.wait()


def read(meterd, port, *quantities):
    out = subprocess.run(
        [str(meterd), "read", "--port", str(port), "--baud", "2400", "--parity", "none",
         "--protocol", "dlt645-2007", "--address", ADDRESS, "--timeout", "3s", "--json",
         "--quantity", *quantities],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    batch = json.loads(out.stdout, parse_float=Decimal)
    return {v["quantity"]: v for v in batch["values"]}


def test_two_tariffs_of_a_four_tariff_meter_leave_its_total_good(meterd, oracle):
    port = oracle(TOTAL)
    got = read(meterd, port, "energy.active.import.total", "energy.active.import.t1", "energy.active.import.t2")
    assert set(got) == {"energy.active.import.total", "energy.active.import.t1", "energy.active.import.t2"}
    for v in got.values():
        assert v["quality"] == "good", v
        assert "reason" not in v, v
    assert got["energy.active.import.total"]["value"] == Decimal(TOTAL)


def test_all_tariffs_and_the_tariff_count_are_compared_with_the_total(meterd, oracle):
    quantities = ["energy.active.import.total", *(f"energy.active.import.t{n}" for n in range(1, 5)),
                  "meter.tariff_count"]
    port = oracle(TOTAL)
    got = read(meterd, port, *quantities)
    assert got["meter.tariff_count"]["value"] == 4, got["meter.tariff_count"]
    assert all(v["quality"] == "good" for v in got.values()), got


def test_a_total_that_is_not_the_sum_of_all_tariffs_is_suspect(meterd, oracle):
    quantities = ["energy.active.import.total", *(f"energy.active.import.t{n}" for n in range(1, 5)),
                  "meter.tariff_count"]
    wrong = str(Decimal(TOTAL) + 1)  # 1001.10
    port = oracle(wrong)
    got = read(meterd, port, *quantities)
    total = got["energy.active.import.total"]
    assert total["quality"] == "suspect", total
    assert total["reason"] == f"tariff registers sum to {TOTAL}, total says {wrong}", total
    assert all(got[f"energy.active.import.t{n}"]["quality"] == "good" for n in range(1, 5)), got
