"""Runs a pymodbus (3.16.1, an independent implementation) Modbus server holding given
registers, over Modbus TCP on loopback or Modbus RTU on a serial port or pty, until killed.

usage: modbus_server.py (--tcp PORT | --rtu DEVICE [--baud N]) MAP_JSON
  MAP_JSON  {"1": {"hr": {"0": [1, 2, 3]}, "ir": {"0": [17254, 6554]}}, "2": {...}}
            unit -> table ("hr" holding, "ir" input) -> first PDU address -> raw 16-bit words.

Only the listed registers exist: a read touching any other address is answered with exception
02 (illegal data address) by pymodbus itself; units not listed stay silent. Prints "ready"
once listening. Ptys cannot do parity: RTU runs 8N1.
"""
import argparse
import asyncio
import json
import logging

from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice, simcore

# pymodbus 3.16.1's SimCore looks an unknown unit up with a bare dict index: the KeyError
# becomes exception 04 even with ignore_missing_devices=True. A unit that does not exist on a
# real multidrop bus is silent, so raise the exception the server's handler expects instead.
_find_device = simcore.SimCore._SimCore__get_device


def _get_device(self, device_id):
    if device_id not in self.devices and 0 not in self.devices:
        raise NoSuchIdException(f"no unit {device_id}")
    return _find_device(self, device_id)


simcore.SimCore._SimCore__get_device = _get_device


def blocks(table: dict) -> list:
    return [
        SimData(int(start), values=[int(w) for w in words], datatype=DataType.REGISTERS)
        for start, words in sorted(table.items(), key=lambda kv: int(kv[0]))
    ]


def devices(register_map: dict) -> list:
    out = []
    for unit, tables in register_map.items():
        # Non-shared layout: (coils, discrete inputs, holding, input); coils/inputs get one
        # dummy register far away so that they exist but hold nothing we read.
        bits = [SimData(60000, values=[False], datatype=DataType.BITS)]
        dummy = [SimData(60000, values=[0], datatype=DataType.REGISTERS)]
        hr = blocks(tables.get("hr", {})) or dummy
        ir = blocks(tables.get("ir", {})) or dummy
        out.append(SimDevice(int(unit), simdata=(bits, bits, hr, ir)))
    return out


async def main():
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=int)
    where.add_argument("--rtu")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("map")
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    context = devices(json.loads(args.map))
    if args.tcp is not None:
        server = ModbusTcpServer(context, address=("127.0.0.1", args.tcp), ignore_missing_devices=True)
    else:
        server = ModbusSerialServer(
            context, port=args.rtu, baudrate=args.baud, parity="N", bytesize=8, stopbits=1, timeout=1,
            ignore_missing_devices=True,
        )
    await server.serve_forever(background=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
