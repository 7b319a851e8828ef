"""Reconnect latency (issue "fee control", acceptance; a bench, not a test: not collected by
pytest): from the PUBLISH of a signed `close` command to the billing core receiving the
command result that says the meter's relay is on (read back from status word 3).

Real parts: mosquitto, `meterd simulate` on a pty at 2400 baud 8E1 with simulated wire time
(replies paced byte by byte at line speed), 32 DL/T 645-2007 meters whose relays start off,
`meterd run` polling all 32 (three-phase profile, every 60 s: the bus is busy, as in the
field), freeze back-fill and event reads on, the docs' signing program (docs/mqtt.md §10).
The result's arrival at the core is after the read-back showed the relay on, so the figure is
an upper bound of "PUBLISH to read-back".

A round starts the simulator and meterd, waits `--settle` seconds (polling and back-fill
under way), then closes its meters one after the other (each waits for the previous result).
Rounds are repeated until `--commands` closes are measured; each round uses fresh relays.

    hil-tests/.venv/bin/python hil-tests/bench_reconnect.py --commands 100
    (METERD_BIN selects the binary, default target/debug/meterd; HIL_QUIET_PORTS the ports)
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import meterd_path, wait_for  # noqa: E402
from daemon_rig import GATEWAY, PREFIX, Proc, Rig, quiet_port  # noqa: E402
from test_control_e2e import Core, signer  # noqa: E402

METERS = [f"{i:012d}" for i in range(1, 33)]


def sim_config(d: Path, link: Path) -> Path:
    text = (f'[clock]\nspeed = 1.0\n\n[[port]]\nname = "dlt"\nserial = "pty"\nlink = "{link}"\n'
            'baud = 2400\nparity = "even"\nwire_time = true\npace = true\nreply_latency = "20ms"\n')
    for i, addr in enumerate(METERS):
        text += (f'\n[[port.meter]]\nprotocol = "dlt645-2007"\naddress = "{addr}"\n'
                 f'profile = "dlt645-three-phase"\nseed = {i + 1}\n'
                 f'relay = {{ password = "123456", operators = ["00000001"], initial = "off" }}\n')
    path = d / "sim.toml"
    path.write_text(text)
    return path


def meterd_config(d: Path, *, port: int, link: Path, data_dir: Path, public_key: str,
                  service: int, interval: str) -> Path:
    cred = d / "credentials.toml"
    cred.write_text('[default]\nlevel = 2\npassword = "123456"\noperator = "00000001"\n')
    cred.chmod(0o600)
    text = (
        f'gateway = "{GATEWAY}"\ndata_dir = "{data_dir}"\n\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ntopic_prefix = "{PREFIX}"\n\n'
        f'[gateway_clock]\nsynchronised = "trusted"\n\n'
        f'[service]\nlisten = "127.0.0.1:{service}"\n\n'
        f'[control]\ncredentials = "{cred}"\nrate_limit = 1000\nread_back_for = "30s"\n\n'
        f'[[control.key]]\nkey_id = "billing-core-2026"\npublic_key = "{public_key}"\n\n'
        f'[[bus]]\nname = "dlt"\ntransport = "serial"\nport = "{link}"\nbaud = 2400\nparity = "even"\n'
        'timing = { response_timeout = "1s", retries = 1 }\n'
    )
    for addr in METERS:
        text += (f'\n[[bus.meter]]\nprotocol = "dlt645-2007"\naddress = "{addr}"\n'
                 f'profile = "dlt645-three-phase"\ninterval = "{interval}"\n')
    path = d / "meterd.toml"
    path.write_text(text)
    return path


def one_round(meterd: Path, d: Path, closes: int, settle: float, interval: str) -> list[float]:
    rig = Rig(meterd, d)
    try:
        broker = rig.broker(port=quiet_port())
        sign = signer(d)
        rig.sim = Proc([meterd, "simulate", "--config", sim_config(d, rig.link)], d, "sim")
        rig.procs.append(rig.sim)
        wait_for(lambda: rig.link.exists() or not rig.sim.alive(), 20, "simulator pty")
        rig.config = meterd_config(d, port=broker.port, link=rig.link, data_dir=rig.data_dir,
                                   public_key=sign.public_key_b64(), service=quiet_port(),
                                   interval=interval)
        core = Core(broker.port, sign, d.name[-6:])
        daemon = rig.start_daemon()
        wait_for(lambda: "subscribed to commands" in daemon.text() or not daemon.alive(), 30,
                 "meterd subscribed to commands")
        assert daemon.alive(), daemon.text()
        time.sleep(settle)
        out = []
        for addr in METERS[:closes]:
            cid = core.send(addr, "close", valid=600)
            r = core.result(cid, timeout=120)
            assert r["outcome"] == "done" and r["relay"]["state"] == "on", r
            out.append(core.latency(cid))
            print(f"  {addr} close: {out[-1]:.2f} s", flush=True)
        core.close()
        return out
    finally:
        rig.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=100)
    ap.add_argument("--settle", type=float, default=20.0, help="seconds of polling before the first close")
    ap.add_argument("--interval", default="60s", help="the meters' poll interval")
    a = ap.parse_args()
    meterd = meterd_path()
    lat = []
    rounds = 0
    with tempfile.TemporaryDirectory() as tmp:
        while len(lat) < a.commands:
            rounds += 1
            d = Path(tmp) / f"round{rounds}"
            d.mkdir()
            n = min(len(METERS), a.commands - len(lat))
            print(f"round {rounds}: {n} closes", flush=True)
            lat += one_round(meterd, d, n, a.settle, a.interval)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))]  # noqa: E731
    print(f"\nreconnect latency, PUBLISH of `close` to its result (relay on read back), "
          f"{len(lat)} commands in {rounds} rounds, 32 meters at 2400 8E1 with wire time, "
          f"polled every {a.interval}:")
    print(f"  p50 {statistics.median(lat):.2f} s   p99 {p(0.99):.2f} s   "
          f"min {lat[0]:.2f} s   max {lat[-1]:.2f} s   (target p99 <= 5 s)")


if __name__ == "__main__":
    main()
