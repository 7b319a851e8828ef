"""The issue's reference point, measured here: a plain pymodbus + paho-mqtt polling loop.

Issue 4 prices a "plain pymodbus+paho loop" at ~7 µs of CPU per published value (50 meters x
25 float32). The pipeline bench (`cargo bench --bench pipeline -- python`) runs this script
against the same simulator, broker and subscriber as scenario 1, so the target (0.35 µs, 20x
below it) can be compared with the reference on this machine rather than on another one.

What it does, as an integrator would write it: one synchronous pymodbus TCP client per
simulator port, every meter read once per interval (one 50-register read), the registers
decoded to 25 float32 (big-endian words, ABCD), a JSON reading built with the json module and
published with paho at QoS 1 (paho's network thread sends and handles the PUBACKs). No spool,
no validation: the same work as the bench's Rust floor loop.

Usage: pymodbus_paho_loop.py MQTT_PORT INTERVAL_S GATEWAY PORT:UNITS [PORT:UNITS ...]
"""

import datetime
import json
import struct
import sys
import time

import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient

VALUES = 25
QUANTITIES = [f"bench.q{i:02}" for i in range(VALUES)]


def main() -> None:
    mqtt_port, every, gateway = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    buses = []
    for b, arg in enumerate(sys.argv[4:]):
        port, units = (int(x) for x in arg.split(":"))
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        if not client.connect():
            sys.exit(f"cannot connect to the simulator on port {port}")
        buses.append((client, [(u, f"p{b}u{u}") for u in range(1, units + 1)]))

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pymodbus-paho")
    pub.max_inflight_messages_set(256)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", mqtt_port, keepalive=30)
    pub.loop_start()

    seq = 0
    next_cycle = time.monotonic()
    while True:
        seq += 1
        for client, meters in buses:
            for unit, name in meters:
                rr = client.read_input_registers(0, count=2 * VALUES, device_id=unit)
                if rr.isError():
                    continue
                words = struct.pack(f">{2 * VALUES}H", *rr.registers)
                floats = struct.unpack(f">{VALUES}f", words)
                reading = {
                    "meter": name,
                    "seq": seq,
                    "read_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="milliseconds"
                    ),
                    "values": [
                        {"quantity": q, "value": v, "quality": "good"}
                        for q, v in zip(QUANTITIES, floats)
                    ],
                }
                pub.publish(
                    f"meterd/{gateway}/meters/{name}/readings", json.dumps(reading), qos=1
                )
        next_cycle += every
        time.sleep(max(0.0, next_cycle - time.monotonic()))


if __name__ == "__main__":
    main()
