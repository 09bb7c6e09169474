"""One-at-a-time load: one blocking connection, one command at a time, for latency."""

from __future__ import annotations

import gc
import socket
from array import array

from .common import BenchError, CONNECT_TIMEOUT, HOST, IO_TIMEOUT, MAX_LINE, Result, perf
from .pipelined import CpuMeter, latency_stats, put_command, reserve_command
from .servers import Endpoint


class SyncConn:
    def __init__(self, port: int):
        self.s = socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT)
        self.s.settimeout(IO_TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        self.s.close()

    def _fill(self):
        chunk = self.s.recv(65536)  # bounded by IO_TIMEOUT
        if not chunk:
            raise BenchError("connection closed by the server")
        self.buf += chunk

    def readline(self) -> bytes:
        for _ in range(MAX_LINE):  # bounded; each pass reads at least one byte
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > MAX_LINE:
                raise BenchError("reply line too long")
            self._fill()
        raise BenchError("reply line too long")

    def skip(self, n: int) -> None:
        for _ in range(n + 1):
            if len(self.buf) >= n:
                del self.buf[:n]
                return
            self._fill()

    def command(self, cmd: bytes, expect: bytes) -> bytes:
        self.s.sendall(cmd)
        line = self.readline()
        if not line.startswith(expect):
            raise BenchError(f"{cmd.split()[0].decode()}: expected {expect.decode()}..., got {line[:80]!r}")
        return line


def serial_put(ep: Endpoint, tube: bytes, args, res: Result) -> Result:
    c = SyncConn(ep.port)
    try:
        c.command(b"use %s\r\n" % tube, b"USING ")
        cmd = put_command(args.body)
        lat = array("d")
        errors = 0
        meter = CpuMeter(ep.pids)
        gc.collect()
        gc.disable()
        meter.start()
        t0 = last = perf()
        deadline = t0 + args.seconds
        for _ in range(args.max_ops):
            t = perf()
            if t >= deadline:
                break
            c.s.sendall(cmd)
            line = c.readline()
            last = perf()
            if line.startswith(b"INSERTED "):
                lat.append(last - t)
            else:
                errors += 1
                if not res.first_error_reply:
                    res.first_error_reply = line[:120].decode("ascii", "replace")
                if errors > 100 and errors > len(lat):
                    break
        meter.stop(res)
    finally:
        gc.enable()
        c.close()
    return finish_serial(res, lat, errors, last - t0,
                         f"no INSERTED replies (first: {res.first_error_reply!r})")


def finish_serial(res: Result, lat, errors: int, seconds: float, empty_reason: str) -> Result:
    """Fill a one-at-a-time workload's result from its latencies and error count."""
    res.seconds = max(seconds, 1e-9)
    res.ops = len(lat)
    res.rate = res.ops / res.seconds
    res.error_replies = errors
    latency_stats(res, lat)
    if not res.ops:
        res.ok, res.error = False, empty_reason
    return res


def serial_reserve_delete(ep: Endpoint, tube: bytes, args, res: Result) -> Result:
    c = SyncConn(ep.port)
    try:
        c.command(b"watch %s\r\n" % tube, b"WATCHING ")
        c.command(b"ignore default\r\n", b"WATCHING ")
        lat = array("d")
        errors = 0
        reserve = reserve_command(args.reserve_timeout)
        meter = CpuMeter(ep.pids)
        gc.collect()
        gc.disable()
        meter.start()
        t0 = last = perf()
        deadline = t0 + args.seconds
        for _ in range(args.max_ops):
            t = perf()
            if t >= deadline:
                break
            c.s.sendall(reserve)
            line = c.readline()
            if line.startswith(b"RESERVED "):
                parts = line.split()
                if len(parts) != 3 or not parts[2].isdigit():
                    raise BenchError(f"bad RESERVED line {line[:80]!r}")
                c.skip(int(parts[2]) + 2)
                c.s.sendall(b"delete " + parts[1] + b"\r\n")
                line = c.readline()
                last = perf()
                if line == b"DELETED":
                    lat.append(last - t)
                    continue
            elif line == b"TIMED_OUT":
                last = perf()
                res.notes.append(f"queue drained after {last - t0:.1f} s")
                break
            errors += 1
            if not res.first_error_reply:
                res.first_error_reply = line[:120].decode("ascii", "replace")
            if errors > 100 and errors > len(lat):
                break
        meter.stop(res)
    finally:
        gc.enable()
        c.close()
    return finish_serial(res, lat, errors, last - t0,
                         f"no reserve+delete completed (first reply: {res.first_error_reply!r})")


