"""Pipelined load: one asyncio process keeps --window commands in flight on each of
--connections connections, with raw protocol bytes, and counts completions in the window."""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import math
import time
from array import array

from .common import BenchError, CONNECT_TIMEOUT, HOST, MAX_LINE, Result, TTR, perf
from .servers import Endpoint, proc_cpu_seconds


def latency_stats(res: Result, lat: array) -> None:
    if not lat:
        return
    s = sorted(lat)
    n = len(s)

    def pct(q: float) -> float:
        return s[max(0, min(n - 1, math.ceil(q * n) - 1))] * 1000.0  # nearest rank

    res.p50_ms, res.p99_ms = pct(0.50), pct(0.99)
    res.mean_ms = math.fsum(s) / n * 1000.0


class CpuMeter:
    def __init__(self, pids: list[int]):
        self.pids = pids

    def start(self):
        self.t, self.c, self.s = perf(), time.process_time(), proc_cpu_seconds(self.pids)

    def stop(self, res: Result):
        wall = perf() - self.t
        c, s = time.process_time(), proc_cpu_seconds(self.pids)
        if wall > 0:
            res.client_cpu_pct = (c - self.c) / wall * 100.0
            if s is not None and self.s is not None:
                res.server_cpu_pct = (s - self.s) / wall * 100.0


def put_command(body: bytes) -> bytes:
    return b"put 1024 0 %d %d\r\n%s\r\n" % (TTR, len(body), body)




class Run:
    """State shared by the connections of one pipelined run."""

    def __init__(self, loop, max_ops: int):
        self.idle = asyncio.Event()
        self.budget = max_ops  # commands (put / reserve) still allowed
        self.stopping = False
        self.limit = math.inf  # completions after this instant are not counted
        self.inflight = 0
        self.done = 0  # successful completions within the window
        self.ok_total = 0  # successful completions, also after the window
        self.lat = array("d")
        self.record_latency = True
        self.errors = 0
        self.first_error = ""
        self.failure = ""
        self.drained_at: float | None = None
        self.finished_at: float | None = None

    def take(self, k: int) -> int:
        if self.stopping or k <= 0:
            return 0
        if k >= self.budget:
            k = self.budget
            self.stopping = True  # budget exhausted: finish when idle
        self.budget -= k
        self.inflight += k
        return k

    def check_idle(self, now: float) -> None:
        if self.stopping and self.inflight <= 0 and not self.idle.is_set():
            self.finished_at = now
            self.idle.set()

    def error_reply(self, line: bytes) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = line[:120].decode("ascii", "replace")

    def fail(self, msg: str) -> None:
        if not self.failure:
            self.failure = msg
        self.stopping = True
        self.idle.set()

    def drained(self, now: float) -> None:
        if self.drained_at is None:
            self.drained_at = now
            self.limit = min(self.limit, now)
        self.stopping = True


class Conn(asyncio.Protocol):
    def __init__(self, run: Run, setup: bytes, expect: tuple[bytes, ...], window: int):
        self.run = run
        self.setup = setup
        self.expect = list(expect)  # prefixes of the setup replies still due
        self.window = window
        self.buf = bytearray()
        self.tr: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "unretrieved"
        self.closing = False

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.setup)

    def connection_lost(self, exc):
        if not self.closing:
            msg = f"connection closed by the server ({exc})" if exc else "connection closed by the server"
            if not self.ready.done():
                self.ready.set_exception(BenchError(msg))
            self.run.fail(msg)

    def close(self):
        self.closing = True
        if self.tr is not None:
            self.tr.abort()

    def data_received(self, data):
        buf = self.buf
        buf += data
        if self.expect:
            while self.expect:
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                line = bytes(buf[:i])
                del buf[:i + 2]
                want = self.expect.pop(0)
                if not line.startswith(want):
                    err = BenchError(f"setup: expected {want.decode().strip()}..., got {line[:80]!r}")
                    if not self.ready.done():
                        self.ready.set_exception(err)
                    self.run.fail(str(err))
                    return
            if not self.ready.done():
                self.ready.set_result(None)
            if not buf:
                return
        self.on_data(buf)
        if len(buf) > MAX_LINE:
            self.run.fail(f"reply longer than {MAX_LINE} bytes without CRLF")

    def on_data(self, buf: bytearray):
        raise NotImplementedError


class PutConn(Conn):
    def __init__(self, run, tube: bytes, body: bytes, window: int):
        super().__init__(run, b"use %s\r\n" % tube, (b"USING ",), window)
        self.cmd = put_command(body)
        self.batch = memoryview(self.cmd * window)
        self.sent = collections.deque()
        self.inflight = 0

    def send(self, k: int, now: float):
        self.tr.write(self.batch[: k * len(self.cmd)])
        self.sent.extend(itertools.repeat(now, k))
        self.inflight += k

    def start(self, now: float):
        k = self.run.take(self.window)
        if k:
            self.send(k, now)

    def on_data(self, buf: bytearray):
        end = buf.rfind(b"\r\n")
        if end < 0:
            return
        end += 2
        n = buf.count(b"\r\n", 0, end)  # put replies are single lines
        ok = buf.count(b"INSERTED ", 0, end)
        run = self.run
        if ok != n:
            pos = 0
            for _ in range(n):
                i = buf.find(b"\r\n", pos)
                if not buf.startswith(b"INSERTED ", pos):
                    run.error_reply(bytes(buf[pos:i]))
                pos = i + 2
        del buf[:end]
        if n > self.inflight:
            run.fail(f"{n} replies for {self.inflight} commands in flight (protocol desync; "
                     f"first error reply: {run.first_error!r})")
            return
        now = perf()
        self.inflight -= n
        run.inflight -= n
        popleft = self.sent.popleft
        if now <= run.limit:
            run.done += ok
            if run.record_latency:
                append = run.lat.append
                for _ in range(n):
                    append(now - popleft())
            else:
                for _ in range(n):
                    popleft()
        else:
            for _ in range(n):
                popleft()
        run.ok_total += ok
        if run.errors > 100 and run.errors > run.ok_total:
            run.fail(f"too many error replies ({run.errors}; first: {run.first_error!r})")
            return
        k = run.take(n)
        if k:
            self.send(k, now)
        run.check_idle(now)


RESERVE0 = b"reserve-with-timeout 0\r\n"


def reserve_command(timeout_s: int) -> bytes:
    """The worker's reserve: ``reserve-with-timeout N`` (0 never waits; the C generator and the
    ``--ratios`` run use 1, which waits when the queue is empty, as workers do)."""
    return b"reserve-with-timeout %d\r\n" % timeout_s


class ReserveDeleteConn(Conn):
    """Keeps `window` reserves in flight; sends `delete` as RESERVED replies arrive."""

    def __init__(self, run, tube: bytes, window: int, reserve: bytes = RESERVE0):
        super().__init__(run, b"watch %s\r\nignore default\r\n" % tube, (b"WATCHING ", b"WATCHING "), window)
        self.res_t = collections.deque()  # send time of each reserve in flight
        self.del_t = collections.deque()  # reserve send time of each delete in flight
        self.reserve = reserve
        self.batch = reserve * window

    def start(self, now: float):
        k = self.run.take(self.window)
        if k:
            self.tr.write(self.batch[: k * len(self.reserve)])
            self.res_t.extend(itertools.repeat(now, k))

    def on_data(self, buf: bytearray):
        run = self.run
        now = perf()
        in_window = now <= run.limit
        res_t, del_t = self.res_t, self.del_t
        lat = run.lat.append
        out = []
        nres = replies = done = 0
        pos, size = 0, len(buf)
        while True:  # bounded: every pass consumes at least one reply from buf
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            if buf.startswith(b"RESERVED ", pos):
                sp = buf.find(b" ", pos + 9, i)
                if sp < 0:
                    run.fail(f"bad RESERVED line {bytes(buf[pos:i])[:80]!r}")
                    return
                try:
                    nbytes = int(buf[sp + 1:i])
                except ValueError:
                    run.fail(f"bad RESERVED line {bytes(buf[pos:i])[:80]!r}")
                    return
                end = i + 4 + nbytes
                if end > size:
                    break  # body not complete yet
                if not res_t:
                    run.fail("RESERVED without a reserve in flight (protocol desync)")
                    return
                out.append(b"delete " + buf[pos + 9:sp] + b"\r\n")
                del_t.append(res_t.popleft())
                nres += 1
                replies += 1
                pos = end
                continue
            line_is = buf.startswith
            if line_is(b"DELETED\r\n", pos):
                if not del_t:
                    run.fail("DELETED without a delete in flight (protocol desync)")
                    return
                t = del_t.popleft()
                done += 1
                if in_window and run.record_latency:
                    lat(now - t)
            elif line_is(b"TIMED_OUT\r\n", pos):
                if not res_t:
                    run.fail("TIMED_OUT without a reserve in flight (protocol desync)")
                    return
                res_t.popleft()
                run.drained(now)
            else:
                line = bytes(buf[pos:i])
                run.error_reply(line)
                if line.startswith(b"DEADLINE_SOON") and res_t:
                    res_t.popleft()
                    nres += 1  # keep the window
                elif line.startswith(b"NOT_FOUND") and del_t:
                    del_t.popleft()
                else:
                    run.fail(f"unexpected reply {line[:80]!r}")
                    return
            replies += 1
            pos = i + 2
        if pos:
            del buf[:pos]
        if not replies:
            return
        if done:
            if in_window and now <= run.limit:
                run.done += done
            run.ok_total += done
        run.inflight -= replies
        k = run.take(nres)
        if out or k:
            run.inflight += len(out)  # deletes are always sent, outside the budget
            if k:
                out.append(self.reserve * k)
                res_t.extend(itertools.repeat(now, k))
            self.tr.write(b"".join(out))
        run.check_idle(now)


async def _pipelined(kind: str, port: int, tube: bytes, conns: int, window: int, seconds: float,
                     max_ops: int, body: bytes, pids: list[int], res: Result,
                     record_latency: bool = True, reserve: bytes = RESERVE0) -> Run:
    loop = asyncio.get_running_loop()
    run = Run(loop, max_ops)
    run.record_latency = record_latency
    if kind == "put":
        def factory():
            return PutConn(run, tube, body, window)
    else:
        def factory():
            return ReserveDeleteConn(run, tube, window, reserve)
    clients: list[Conn] = []
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                for _ in range(conns):
                    _, proto = await loop.create_connection(factory, HOST, port)
                    clients.append(proto)
                await asyncio.gather(*(c.ready for c in clients))
        except TimeoutError:
            raise BenchError(f"could not open and set up {conns} connections within {CONNECT_TIMEOUT:.0f} s "
                             f"({len(clients)} open)") from None
        meter = CpuMeter(pids)
        meter.start()
        t0 = perf()
        run.limit = t0 + seconds
        for c in clients:
            c.start(t0)
        try:
            await asyncio.wait_for(run.idle.wait(), timeout=seconds)
        except TimeoutError:
            pass
        window_end = perf()
        meter.stop(res)
        failed_in_window = run.failure
        run.stopping = True
        run.check_idle(window_end)
        drain = max(5.0, seconds)
        try:
            await asyncio.wait_for(run.idle.wait(), timeout=drain)
        except TimeoutError:
            res.notes.append(f"{run.inflight} replies never came ({drain:.0f} s after the window)")
        if failed_in_window:
            raise BenchError(failed_in_window)
        if run.failure:
            res.notes.append(f"after the window: {run.failure}")
        end = min(run.limit, run.finished_at or math.inf, window_end)
        res.seconds = max(end - t0, 1e-9)
        return run
    finally:
        for c in clients:
            c.close()


def run_pipelined(kind, ep: Endpoint, tube: bytes, args, seconds: float, max_ops: int,
                  res: Result, record_latency: bool = True) -> Run:
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(_pipelined(kind, ep.port, tube, args.connections, args.window, seconds,
                                      max_ops, args.body, ep.pids, res, record_latency,
                                      reserve_command(getattr(args, "reserve_timeout", 0))))
    finally:
        gc.enable()


def finish_pipelined(res: Result, run: Run) -> Result:
    res.ops = run.done
    res.rate = run.done / res.seconds
    res.error_replies, res.first_error_reply = run.errors, run.first_error
    latency_stats(res, run.lat)
    if res.ops == 0:
        res.ok = False
        res.error = (f"no successful replies (first error reply: {run.first_error!r})"
                     if run.first_error else "no successful replies")
    return res


def preload(ep: Endpoint, tube: bytes, args, count: int, seconds: float | None = None) -> int:
    """Puts up to `count` jobs into `tube` (pipelined, time-capped); returns how many went in."""
    if count <= 0:
        return 0
    scratch = Result(ep.label, "preload")
    run = run_pipelined("put", ep, tube, args, seconds or args.preload_seconds, count, scratch,
                        record_latency=False)
    if run.errors and not run.ok_total:
        raise BenchError(f"preload failed: {run.first_error!r}")
    return run.ok_total


