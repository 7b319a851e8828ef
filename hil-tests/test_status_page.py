"""HIL: the status page shows trouble at a glance, in headless Chromium at 1280 × 900.

A real `meterd simulate` serves two Modbus RTU meters behind a loopback serial device server
(raw TCP): a good one and one whose replies are often corrupted (`corrupt`: CRC errors). A real
`meterd run` polls them and a third address where no meter answers. The page must show the good
meter green, the noisy one amber ("errors": checksum errors in the last hour, though it
answers), the dead address as "never answered" (not "ok, last success never"), each meter's
24-hour strip (24 hourly buckets) and a sparkline of its last power values (gaps for the dead
one), the bus's utilisation and overruns coloured by level, and the whole table within 1280 px
(the "read now" buttons visible). The screenshot goes to METERD_SCREENSHOT_DIR/status-page.png
when that is set (docs/status-page.png is made so).
"""
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from conftest import port_open, wait_for
from daemon_rig import quiet_port
from headless import DevToolsPage

SIM = """
[[port]]
name = "rtu"
tcp = "127.0.0.1:{rtu}"
baud = 9600
parity = "even"
wire_time = false

[[port.meter]]
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
seed = 11

[[port.meter]]
protocol = "modbus-rtu"
unit = 2
profile = "eastron-sdm630"
seed = 12
faults = {{ corrupt = {{ probability = 0.3 }} }}
"""

DAEMON = """
gateway = "gw-page"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"

[service]
listen = "127.0.0.1:{service}"
trend_quantity = "power.active.total"

[[bus]]
name = "rtu"
transport = "tcp"
host = "127.0.0.1:{rtu}"
baud = 9600
timing = {{ response_timeout = "150ms", retries = 1, turnaround = "5ms" }}

[[bus.meter]]
id = "good"
protocol = "modbus-rtu"
unit = 1
profile = "eastron-sdm630"
interval = "1s"

[[bus.meter]]
id = "noisy"
protocol = "modbus-rtu"
unit = 2
profile = "eastron-sdm630"
interval = "1s"

[[bus.meter]]
id = "dead-address"
protocol = "modbus-rtu"
unit = 7
profile = "eastron-sdm630"
interval = "1s"
"""

# One summary of what the page shows, computed in the page (layout included).
SUMMARY = """(() => {
  const rows = {};
  for (const tr of document.querySelectorAll("tr.meter")) {
    const badge = tr.querySelector(".state");
    const strip = tr.querySelector("svg.strip");
    const spark = tr.querySelector("svg.spark");
    const button = tr.querySelector("button[data-read]");
    const r = button.getBoundingClientRect();
    rows[tr.dataset.meter] = {
      condition: tr.dataset.condition,
      state: tr.dataset.state,
      badge: badge.textContent,
      badgeClass: badge.className,
      badgeColour: getComputedStyle(badge).backgroundColor,
      buckets: strip ? Number(strip.dataset.buckets) : null,
      rects: strip ? Array.from(strip.querySelectorAll("rect")).map(x => [x.getAttribute("class"), Number(x.dataset.polls), Number(x.dataset.ok)]) : [],
      sparkPoints: spark ? Number(spark.dataset.points) : null,
      sparkGaps: spark ? Number(spark.dataset.gaps) : null,
      sparkLines: spark ? spark.querySelectorAll("polyline").length : 0,
      buttonRight: r.right,
      buttonVisible: r.width > 0 && r.right <= window.innerWidth,
    };
  }
  const levels = {};
  for (const x of document.querySelectorAll(".lvl[data-kind]")) {
    levels[x.dataset.kind] = { level: x.dataset.level, colour: getComputedStyle(x).color };
  }
  return { rows, levels, scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth };
})()"""

GREEN = "rgb(26, 127, 55)"
AMBER = "rgb(199, 124, 2)"
GREY = "rgb(95, 99, 104)"
LEVEL_COLOUR = {"ok": GREEN, "warn": AMBER, "bad": "rgb(198, 40, 40)"}


def status(url):
    with urllib.request.urlopen(url + "/api/status", timeout=30) as r:
        return json.loads(r.read())


def meters(s):
    return {m["id"]: m for b in s["buses"] for m in b["meters"]}


def test_status_page_shows_trouble_at_a_glance(meterd, mosquitto, tmp_path):
    ports = {"rtu": quiet_port(), "service": quiet_port()}
    (tmp_path / "sim.toml").write_text(SIM.format(**ports))
    (tmp_path / "data").mkdir()
    (tmp_path / "meterd.toml").write_text(DAEMON.format(data=tmp_path / "data", mqtt=mosquitto.port, **ports))
    sim = subprocess.Popen([str(meterd), "simulate", "--config", str(tmp_path / "sim.toml")],
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sim.log", "w"))
    daemon = None
    try:
        wait_for(lambda: port_open(ports["rtu"]), 15, "simulator")
        daemon = subprocess.Popen([str(meterd), "run", "--config", str(tmp_path / "meterd.toml")],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "meterd.log", "w"))
        url = f"http://127.0.0.1:{ports['service']}"
        wait_for(lambda: port_open(ports["service"]), 15, "diagnostics service")
        found = {}

        def settled():
            m = meters(status(url))
            found["m"] = m
            return (m["good"]["condition"] == "ok" and len((m["good"].get("trend") or {}).get("values", [])) >= 10
                    and m["noisy"]["last_hour"]["checksum_errors"] > 0 and m["noisy"]["polls_ok"] > 0
                    and m["dead-address"]["polls_failed"] >= 2)

        wait_for(settled, 60, f"meters settled: {found.get('m')}")
        m = found["m"]
        # The JSON the page reads.
        assert m["noisy"]["condition"] == "errors", m["noisy"]
        assert m["noisy"]["state"] == "ok" and m["noisy"]["last_checksum_error_at"]
        dead = m["dead-address"]
        assert dead["condition"] == "never_answered" and dead["last_success"] is None, dead
        assert dead["last_hour"]["timeouts"] > 0 and dead["last_timeout_at"]
        for mid in ("good", "noisy", "dead-address"):
            h = m[mid]["hourly"]
            assert len(h["polls"]) == len(h["ok"]) == 24 and h["polls"][-1] > 0, (mid, h)
            assert m[mid]["trend"]["quantity"] == "power.active.total" and m[mid]["trend"]["unit"] == "kW"
        assert all(v is None for v in dead["trend"]["values"]), dead["trend"]
        assert m["good"]["hourly"]["ok"][-1] == m["good"]["hourly"]["polls"][-1]
        bus = status(url)["buses"][0]
        assert bus["utilisation_level"] in ("ok", "warn", "bad") and bus["overruns_level"] in ("ok", "warn", "bad")

        with DevToolsPage(url + "/") as page:
            wait_for(lambda: page.evaluate("document.querySelectorAll('tr.meter').length") == 3, 20, "rows")
            seen = page.evaluate(SUMMARY)
            shot = page.screenshot()
        rows = seen["rows"]
        print(json.dumps({k: {**r, "rects": r["rects"][-3:]} for k, r in rows.items()}, indent=1), seen["levels"])
        good, noisy, dead = rows["good"], rows["noisy"], rows["dead-address"]
        # Green, amber, and "never answered" in grey (not "ok / never").
        assert (good["condition"], good["badge"], good["badgeColour"]) == ("ok", "ok", GREEN), good
        assert (noisy["condition"], noisy["badge"], noisy["badgeColour"]) == ("errors", "errors", AMBER), noisy
        assert (dead["condition"], dead["badge"], dead["badgeColour"]) == ("never_answered", "never answered", GREY), dead
        # 24 hourly buckets each; the current hour of the good meter is all ok, of the dead one none.
        for r in (good, noisy, dead):
            assert r["buckets"] == 24 and len(r["rects"]) == 24, r
        assert good["rects"][-1][0] == "h-ok" and good["rects"][-1][1] > 0, good["rects"][-1]
        assert dead["rects"][-1][0] == "h-fail" and dead["rects"][-1][2] == 0, dead["rects"][-1]
        assert all(c == "h-none" for c, p, _ in good["rects"] if p == 0)
        # Sparklines: points for the meters that answer, only gaps for the dead address.
        assert good["sparkPoints"] >= 5 and good["sparkLines"] >= 1, good
        assert noisy["sparkPoints"] >= 1, noisy
        assert dead["sparkPoints"] == 0 and dead["sparkGaps"] >= 2, dead
        # Bus utilisation and overruns coloured by their level.
        assert set(seen["levels"]) == {"utilisation", "overruns"}, seen["levels"]
        for kind, shown in seen["levels"].items():
            assert shown["colour"] == LEVEL_COLOUR[shown["level"]], (kind, shown)
        # Fits 1280 px: no horizontal scrolling, every "read now" button on screen.
        assert seen["innerWidth"] == 1280, seen["innerWidth"]
        assert seen["scrollWidth"] <= 1280, seen["scrollWidth"]
        assert all(r["buttonVisible"] for r in rows.values()), {k: r["buttonRight"] for k, r in rows.items()}
        out = tmp_path / "status-page.png"
        out.write_bytes(shot)
        keep = os.environ.get("METERD_SCREENSHOT_DIR")
        if keep:
            shutil.copy(out, Path(keep) / "status-page.png")
        print(f"status page screenshot: {out}")
    finally:
        for p in (daemon, sim):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
