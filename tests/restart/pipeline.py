"""A small pipelined beanstalk driver for the scale tests and scripts: many commands, few syscalls."""

from __future__ import annotations

import socket


def _replies(sock: socket.socket, count: int, buf: bytearray) -> list[bytes]:
    """Read ``count`` one-line replies (bodies of RESERVED/FOUND are skipped)."""
    out = []
    while len(out) < count:
        end = buf.find(b"\r\n")
        if end < 0:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            buf += data
            continue
        line = bytes(buf[:end])
        if line.startswith((b"RESERVED ", b"FOUND ")):
            size = int(line.split()[2])
            while len(buf) < end + 2 + size + 2:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                buf += data
            del buf[: end + 2 + size + 2]
        else:
            del buf[: end + 2]
        out.append(line)
    return out


def pipeline(address, commands: list[bytes], window: int = 500) -> list[bytes]:
    """Send ``commands`` with up to ``window`` in flight; return their reply lines in order."""
    sock = socket.create_connection(address, timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    replies: list[bytes] = []
    try:
        for start in range(0, len(commands), window):
            chunk = commands[start : start + window]
            sock.sendall(b"".join(chunk))
            replies += _replies(sock, len(chunk), buf)
    finally:
        sock.close()
    return replies


def put_commands(count: int, body: bytes = b"x" * 100, pri: int = 100) -> list[bytes]:
    header = b"put %d 0 120 %d\r\n" % (pri, len(body))
    return [header + body + b"\r\n"] * count


def dir_size(path) -> int:
    import os

    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_blocks * 512  # space really used
    return total
