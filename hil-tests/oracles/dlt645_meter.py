"""Runs the PyPI `dlt645==3.2.0` meter simulator (an independent implementation) on a serial
port or pty, with values given as JSON, until killed.

usage: dlt645_meter.py PORT ADDRESS VALUES_JSON
  ADDRESS      the meter address in document form, e.g. 123456789012
  VALUES_JSON  {"00000000": 1234.56, "02010100": 220.5, "01010000": [12.3456, "2024-05-06T07:08"]}

The package uses addresses in wire order (shared/notes/dlt645.md §4.1 deviation 1), so the
address is reversed here to emulate the meter the document form names. Ptys cannot do parity:
8N1 is used.
"""
import json
import sys
import time
from datetime import datetime

from dlt645.model.types.dlt645_type import Demand
from dlt645.service.serversvc.server_service import MeterServerService


def main():
    port, address, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    server = MeterServerService.new_rtu_server(port, 8, 1, 2400, "N", 1.0)
    wire = bytes.fromhex(address)[::-1]
    server.set_address(wire)
    server.set_password("02000000")
    for di_text, value in values.items():
        di = int(di_text, 16)
        cls = di >> 24
        if cls == 0x00:
            server.set_00(di, float(value))
        elif cls == 0x01:
            server.set_01(di, Demand(float(value[0]), datetime.fromisoformat(value[1])))
        elif cls == 0x02:
            server.set_02(di, float(value))
        elif cls == 0x04:
            server.set_04(di, value)
        else:
            raise SystemExit(f"unsupported DI class {di_text}")
    server.start()
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
