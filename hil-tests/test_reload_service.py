"""SIGHUP applies `[service]` and forgets removed meters; the service refuses rebinding and CSRF.

`meterd simulate` serves the raw-TCP buses of test_reload.py; `meterd run` publishes to a real
mosquitto with the diagnostics service behind a token file. Then:

1. the service answers the old token; `Host: evil.example` gets 421, a cross-site POST 403, a
   POST without a JSON content type 415 (Python's http.client, a real HTTP client);
2. the token file is rewritten and a meter removed from the Modbus bus, SIGHUP: the old token
   is refused (401), the new one accepted, and the removed meter's retained status topic is
   empty for a new subscriber while the kept meter's is still there;
3. SIGTERM: exit 0.
"""
import http.client
import json
import re
import signal
import subprocess
import threading
import time

import paho.mqtt.client as mqtt

from conftest import free_port, wait_for
from test_reload import GATEWAY, gateway_config, sim  # noqa: F401 (the fixture)


def request(port, method, path, token=None, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    text = r.read().decode(errors="replace")
    conn.close()
    return r.status, text


def retained_statuses(port, seconds=3.0):
    """The retained meter status topics a new subscriber receives: topic -> payload."""
    got, lock = {}, threading.Lock()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"retained-{time.time_ns()}")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"meterd/{GATEWAY}/meters/+/status", qos=1)

    def on_message(c, u, msg):
        if msg.retain:
            with lock:
                got[msg.topic] = msg.payload

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(seconds)
    client.loop_stop()
    client.disconnect()
    with lock:
        return dict(got)


def test_reload_rotates_the_token_and_clears_removed_meters(meterd, workdir, mosquitto, sim):  # noqa: F811
    dlt_port, rtu_port, _truth = sim
    service_port = free_port()
    token = workdir / "token"
    token.write_text("old-token\n")
    token.chmod(0o600)
    conf = workdir / "meterd.toml"
    log_path = workdir / "meterd.log"

    def write(units):
        text = gateway_config(workdir / "data", mosquitto.port, dlt_port, rtu_port, units)
        text += f'\n[service]\nlisten = "127.0.0.1:{service_port}"\ntoken_file = "{token}"\n'
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(conf)

    def log():
        return re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))

    write([1, 2])
    log_file = open(log_path, "w")
    daemon = subprocess.Popen(
        [str(meterd), "run", "--config", str(conf)], stdout=log_file, stderr=subprocess.STDOUT
    )
    status2 = f"meterd/{GATEWAY}/meters/rtu-unit2/status"
    status1 = f"meterd/{GATEWAY}/meters/rtu-unit1/status"
    try:
        wait_for(lambda: "diagnostics service listening" in log(), 15, "the service")
        assert request(service_port, "GET", "/api/status", "old-token")[0] == 200
        # Guards: DNS rebinding, CSRF, content type.
        code, text = request(service_port, "GET", "/api/status", "old-token",
                             {"Host": f"evil.example:{service_port}"})
        assert code == 421, text
        body = json.dumps({"meter": "rtu-unit1"})
        code, text = request(service_port, "POST", "/api/read", "old-token",
                             {"Content-Type": "application/json", "Origin": "https://evil.example"}, body)
        assert code == 403, text
        code, text = request(service_port, "POST", "/api/read", "old-token",
                             {"Content-Type": "text/plain"}, body)
        assert code == 415, text

        wait_for(lambda: {status1, status2} <= set(retained_statuses(mosquitto.port, 1.0)), 30,
                 "both Modbus meters' retained statuses")

        token.write_text("new-token\n")
        write([1])
        before = log().count("reload: ")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: log().count("reload: ") > before, 15, "the reload")
        wait_for(lambda: request(service_port, "GET", "/api/status", "new-token")[0] == 200, 10,
                 "the new token accepted")
        code, _ = request(service_port, "GET", "/api/status", "old-token")
        assert code == 401, "the old token still works after the rotation"

        retained = retained_statuses(mosquitto.port)
        assert status1 in retained, retained.keys()
        assert status2 not in retained, f"the removed meter's status is still retained: {retained.get(status2)}"
        assert "retained statuses of removed meters cleared" in log(), log()

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0, log()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log_file.close()
