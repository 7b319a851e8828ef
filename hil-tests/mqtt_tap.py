"""A TCP proxy between meterd and the broker that records what MQTT says on the wire.

For each connection it logs every PUBLISH meterd sends (packet id and the reading's `id`) and
every PUBACK the broker returns. A reading that is missing at the subscriber can then be
judged: if the broker PUBACKed it, the broker lost it (a SIGKILLed mosquitto loses what it
acknowledged but had not saved or delivered); if it was deleted from meterd's spool without a
PUBACK, meterd lost it.
"""
import json
import socket
import threading
import time


def _remaining_length(buf, i):
    """MQTT variable-length integer at buf[i:], -> (value, bytes used) or None if incomplete."""
    value, mult, used = 0, 1, 0
    while True:
        if i + used >= len(buf):
            return None
        b = buf[i + used]
        value += (b & 0x7F) * mult
        used += 1
        if b & 0x80 == 0:
            return value, used
        mult *= 128
        if used > 4:
            raise ValueError("bad remaining length")


def _packets(buf):
    """Complete MQTT packets at the start of buf -> (list of (type, flags, body), bytes used)."""
    out, i = [], 0
    while i + 2 <= len(buf):
        rl = _remaining_length(buf, i + 1)
        if rl is None:
            break
        length, used = rl
        end = i + 1 + used + length
        if end > len(buf):
            break
        out.append((buf[i] >> 4, buf[i] & 0x0F, bytes(buf[i + 1 + used:end])))
        i = end
    return out, i


class MqttTap:
    def __init__(self, upstream_port: int, listen_port: int):
        self.upstream = upstream_port
        self.events = []  # (conn, kind, pkid, reading_id or None)
        self.payloads = {}  # reading id -> the payload meterd published (last copy)
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", listen_port))
        self.server.listen(8)
        self.port = listen_port
        self.conns = 0
        self.open = set()  # connections whose broker side has not yet closed
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
                broker.settimeout(None)
            except OSError:
                client.close()  # broker down: meterd sees a refused/closed connection
                continue
            with self.lock:
                self.conns += 1
                conn = self.conns
                self.open.add(conn)
            threading.Thread(target=self._pump, args=(client, broker, conn, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client, conn, "down"), daemon=True).start()

    def _record(self, conn, direction, ptype, flags, body):
        if direction == "up" and ptype == 3:  # PUBLISH from meterd
            qos = (flags >> 1) & 3
            tlen = int.from_bytes(body[:2], "big")
            topic = body[2:2 + tlen].decode(errors="replace")
            pkid = int.from_bytes(body[2 + tlen:4 + tlen], "big") if qos else None
            payload = body[2 + tlen + (2 if qos else 0):]
            rid = None
            if topic.endswith("/readings"):
                try:
                    rid = json.loads(payload)["id"]
                except (ValueError, KeyError):
                    rid = "?"
            with self.lock:
                self.events.append((conn, "publish", pkid, rid))
                if rid:
                    self.payloads[rid] = bytes(payload)
        elif direction == "down" and ptype == 4:  # PUBACK from the broker
            with self.lock:
                self.events.append((conn, "puback", int.from_bytes(body[:2], "big"), None))

    def _pump(self, src, dst, conn, direction):
        buf = bytearray()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                packets, used = _packets(buf)
                for ptype, flags, body in packets:
                    self._record(conn, direction, ptype, flags, body)
                del buf[:used]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if direction == "down":
                # Every byte the broker sent on this connection has been recorded.
                with self.lock:
                    self.open.discard(conn)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def acked_ids(self):
        """Reading ids the broker acknowledged (a PUBACK for their packet id on their connection)."""
        with self.lock:
            events = list(self.events)
        inflight, acked = {}, set()
        for conn, kind, pkid, rid in events:
            if kind == "publish" and pkid is not None:
                inflight[(conn, pkid)] = rid
            elif kind == "puback":
                rid = inflight.pop((conn, pkid), None)
                if rid:
                    acked.add(rid)
        return acked

    def wait_closed(self, timeout=10.0):
        """Wait until every connection's broker side has closed and all it sent is recorded
        (after a broker kill: its last PUBACKs are in `acked_ids` once this returns)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                still_open = sorted(self.open)
            if not still_open:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"tap connections {still_open} still open")
            time.sleep(0.01)

    def published_ids(self):
        with self.lock:
            return {rid for _, kind, _, rid in self.events if kind == "publish" and rid}

    def payload(self, rid):
        """The payload meterd published for reading `rid` (None if it never did)."""
        with self.lock:
            return self.payloads.get(rid)

    def close(self):
        self.stopped = True
        self.server.close()
