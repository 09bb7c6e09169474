"""The machinery of the interleaved differential tests (test_transcripts_interleaved.py): raw
connections to the reference and the target, a generator of valid commands, and the run that
sends both servers the same steps and compares what every connection received.

Theory of operation
-------------------
* One step is one command on one connection, sent to both servers, sometimes in pieces cut at
  random bytes. A connection owes one reply per command sent (``Conn.expected``); it *waits*
  while it is owed more than it received.
* Settling. Only a reply says that a server ran a command, and a reserve that blocks never
  answers; an observer connection therefore polls ``stats``. A side has settled when the
  connection answered or ``current-waiting`` counts it, and when every connection that
  ``stats`` no longer counts as waiting has received its reply. The target, whose closes commit
  after the socket went and whose followers apply a moment after the leader, settles when its
  job, waiter and connection gauges also equal the reference's (after a connection ended, also
  the users, watchers, waiters and pause of every tube).
* Replies are split structurally; YAML bodies have clock and process values masked, and so do
  the counters of the observer's own commands and of the pokes.
* Pokes. beanstalkd 1.12 can miss the TTR expiry of a job whose holder is silent (§13 of the
  reference), and a command on the holder's connection makes up for it. While the run sends
  nothing to the target (``Run.idle_until``), every connection of a beanstalkd side that does
  not wait is sent ``list-tube-used`` every ``POKE_S``; its reply is dropped.
"""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import dataclass, field

import pytest
from polling import readable

REFERENCE = "beanstalkd"
MAX_JOB_SIZE = 3000
CONNECTIONS = 3
TUBES = [b"default", b"a", b"b"]
FAR = b"3600"  # a delay, TTR, pause or timeout that never expires during a run
POKE_S = 0.01  # how often a beanstalkd side's idle connections are poked
QUIET_S = 30.0  # the longest wait, after the last command, until no timer is left
REFERENCE_SETTLE_S = 3.0
TARGET_SETTLE_S = 5.0
#: Values that belong to the clock or the process, and the counters of the observer's polls.
MASKED = {b"age", b"time-left", b"pause-time-left", b"pid", b"version", b"rusage-utime",
          b"rusage-stime", b"uptime", b"total-connections", b"id", b"hostname", b"os", b"platform",
          b"binlog-oldest-index", b"binlog-current-index", b"binlog-records-migrated",
          b"binlog-records-written", b"cmd-stats", b"cmd-stats-tube", b"cmd-list-tube-used"}
#: What the generator draws from, weighted in ``Generator.command``.
COMMAND_KINDS = ("put", "reserve", "reserve-job", "job", "release", "bury", "kick", "tube", "pause",
                 "read", "end")
#: The `stats` gauges a target must reach before its replies are compared.
GAUGES = ("current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
          "current-jobs-delayed", "current-jobs-buried", "current-tubes", "current-connections",
          "current-waiting")


# --------------------------------------------------------------------------- one connection


class Conn:
    """A raw connection that splits what it receives into whole replies, without blocking."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=3)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.replies: list[bytes] = []
        self.expected = 0  # replies owed for the commands sent so far
        self.eof = False

    @property
    def waiting(self) -> bool:
        return len(self.replies) < self.expected and not self.eof

    def send(self, data: bytes, cuts: list[int]) -> None:
        """Sends ``data`` in pieces cut at ``cuts``, each its own segment."""
        start = 0
        for at in cuts + [len(data)]:
            if at > start:
                self.sock.sendall(data[start:at])
                if at < len(data):
                    time.sleep(0.001)
                start = at

    def pump(self, wait_s: float) -> None:
        """Reads what arrives within ``wait_s`` and splits off every whole reply."""
        if self.eof or not readable([self.sock], wait_s):
            return
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return
        self.buffer += chunk
        while (reply := self._whole_reply()) is not None:
            self.replies.append(reply)

    def _whole_reply(self) -> bytes | None:
        line, crlf, _ = self.buffer.partition(b"\r\n")
        if not crlf:
            return None
        words = line.split(b" ")
        size = len(line) + 2
        if words[0] in (b"RESERVED", b"FOUND", b"OK") and words[-1].isdigit():
            size += int(words[-1]) + 2
        if len(self.buffer) < size:
            return None
        reply, self.buffer = self.buffer[:size], self.buffer[size:]
        return masked(reply) if words[0] == b"OK" else reply

    def poke(self) -> None:
        """A harmless command whose reply is dropped (see ``Run.idle_until``)."""
        self.sock.sendall(b"list-tube-used\r\n")
        self.expected += 1
        deadline = time.monotonic() + 3
        while self.waiting and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())
        assert not self.waiting and self.replies[-1].startswith(b"USING "), self.replies[-1:]
        self.replies.pop()
        self.expected -= 1

    def close(self) -> None:
        self.sock.close()


def masked(reply: bytes) -> bytes:
    """An `OK` YAML reply with clock- and process-dependent values (and its length) hidden."""
    body = reply.partition(b"\r\n")[2]
    return b"OK *\r\n" + re.sub(
        rb"\n([a-z-]+): [^\n]*", lambda m: b"\n" + m.group(1) + b": *" if m.group(1) in MASKED else m.group(0),
        body)


class Side:
    """One server: the fuzzed connections and an observer that polls `stats`."""

    def __init__(self, target, settle_s: float):
        self.target = target
        self.settle_s = settle_s
        self.conns = [Conn(target.address) for _ in range(CONNECTIONS)]
        self.observer = Conn(target.address)

    def ask(self, line: bytes) -> bytes:
        """The observer's reply to ``line``."""
        observer = self.observer
        observer.sock.sendall(line + b"\r\n")
        observer.expected += 1
        deadline = time.monotonic() + 3
        while observer.waiting and time.monotonic() < deadline:
            observer.pump(deadline - time.monotonic())
        assert not observer.waiting, f"{self.target.kind}: no reply to {line!r}"
        observer.expected -= 1
        return observer.replies.pop()

    def stats(self) -> dict[str, int]:
        """The numeric `stats` figures."""
        return {k.decode(): int(v) for k, v in re.findall(rb"\n([a-z-]+): (\d+)(?=\n)", self.ask(b"stats"))}

    def pump_all(self, wait_s: float = 0) -> None:
        """Reads every connection's replies, waiting at most ``wait_s`` for the first byte."""
        open_conns = [conn for conn in self.conns if not conn.eof]
        ready = readable([c.sock for c in open_conns], wait_s)
        for conn in open_conns:
            if conn.sock in ready:
                conn.pump(0)

    def waiters(self) -> int:
        return sum(conn.waiting for conn in self.conns)

    def snapshot(self, tubes: bool) -> dict:
        """The `stats` gauges and, with ``tubes``, who uses, watches and waits on each tube."""
        figures = self.stats()
        shot = {k: figures[k] for k in GAUGES}
        for name in TUBES if tubes else ():
            reply = self.ask(b"stats-tube " + name)
            shot[name] = re.findall(rb"current-(?:using|watching|waiting): \d+|pause: \d+", reply)
        return shot

    def settle(self, index: int | None, kind: str, reference: dict | None = None) -> dict:
        """Lets the command just sent on ``index`` (None: none) take effect (module doc:
        settling) and returns the snapshot it left; a target waits until its snapshot equals
        ``reference``."""
        deadline = time.monotonic() + self.settle_s
        conn = self.conns[index] if index is not None else None
        while conn is not None and time.monotonic() < deadline:
            self.pump_all(0.02)
            if not conn.waiting:
                break
            if kind == "wait" and self.stats()["current-waiting"] == self.waiters():
                break
        ends = kind in ("quit", "close", "half-close")
        connections = CONNECTIONS + 1 - ends
        while True:
            shot = self.snapshot(tubes=ends)
            self.pump_all()
            if shot["current-waiting"] == self.waiters() and (
                    shot == reference if reference is not None else shot["current-connections"] == connections):
                return shot
            if time.monotonic() > deadline:
                return shot
            time.sleep(0.002)

    def reconnect(self, index: int, reference: dict | None = None) -> dict:
        """A new connection in place of ``index``; returns the snapshot once the server counts
        it (a target: once its snapshot equals ``reference``)."""
        self.conns[index].close()
        self.conns[index] = Conn(self.target.address)
        deadline = time.monotonic() + self.settle_s
        while True:
            shot = self.snapshot(tubes=True)
            if (shot == reference if reference is not None
                    else shot["current-connections"] == CONNECTIONS + 1) or time.monotonic() > deadline:
                return shot
            time.sleep(0.002)

    def close(self) -> None:
        for conn in self.conns + [self.observer]:
            conn.close()


# --------------------------------------------------------------------------- the generator


@dataclass
class Model:
    """What the generator knows of each connection: its watch list, the jobs it was handed and
    whether the reserve it waits in has a timeout."""

    watch: list[list[bytes]] = field(default_factory=lambda: [[b"default"] for _ in range(CONNECTIONS)])
    timed_wait: list[bool] = field(default_factory=lambda: [False] * CONNECTIONS)
    held: list[list[bytes]] = field(default_factory=lambda: [[] for _ in range(CONNECTIONS)])
    seen: list[int] = field(default_factory=lambda: [0] * CONNECTIONS)  # replies looked at

    def reset(self, index: int) -> None:
        self.watch[index] = [b"default"]
        self.timed_wait[index] = False
        self.held[index] = []
        self.seen[index] = 0

    def note_reserved(self, index: int, replies: list[bytes]) -> None:
        """Remembers the jobs ``index`` was handed (some may have expired since)."""
        for reply in replies[self.seen[index]:]:
            if reply.startswith(b"RESERVED "):
                self.held[index].append(reply.split(b" ")[1])
        self.seen[index] = len(replies)

    def track(self, index: int, line: bytes, reply: bytes) -> None:
        """Keeps the watch list of ``index`` as the reference answered ``line``."""
        words = line.split()
        if len(words) != 2 or not reply.startswith(b"WATCHING"):
            return
        watched = self.watch[index]
        if words[0] == b"watch" and words[1] not in watched:
            watched.append(words[1])
        elif words[0] == b"ignore" and words[1] in watched:
            at = watched.index(words[1])
            watched[at] = watched[-1]  # beanstalkd's swap-remove
            watched.pop()


class Generator:
    """Seeded valid commands for one connection; ``timed``: with delays, TTRs, pauses and
    timeouts of one to three seconds instead of ``FAR``."""

    def __init__(self, rng: random.Random, timed: bool):
        self.rng = rng
        self.timed = timed
        self.max_id = 0

    def job_id(self, held: list[bytes] = ()) -> bytes:
        """Mostly a job of ``held`` or one of the latest jobs, which are more likely to exist."""
        if held and self.rng.random() < 0.7:
            return self.rng.choice(held)
        low = 1 if self.rng.random() < 0.3 else max(1, self.max_id - 3)
        return b"%d" % self.rng.randint(low, self.max_id + 1)

    def pri(self) -> bytes:
        return self.rng.choice([b"0", b"1", b"1023", b"1024", b"5000"])

    def duration(self, *short: bytes) -> bytes:
        """0 mostly, else one of ``short`` when timed, else ``FAR``."""
        if self.rng.random() < 0.6:
            return b"0"
        return self.rng.choice(short) if self.timed else FAR

    def body(self) -> bytes:
        r = self.rng
        size = r.choice([r.randint(0, 6)] * 6 + [MAX_JOB_SIZE - 1, MAX_JOB_SIZE, MAX_JOB_SIZE + 1])
        return bytes(r.choice(b"ab\r\n\x00 \xff") for _ in range(size))

    def command(self, index: int, model: Model, may_block: bool, ready: int) -> tuple[bytes, str]:
        """A command line (with its body) for connection ``index`` and its kind: "reply",
        "wait" (a reserve that may block), "quit", "close" or "half-close". Puts are frequent
        while fewer than two jobs are ready and rare beyond, so the queue hovers near empty,
        where reserves wait and jobs change hands."""
        r = self.rng
        kind = r.choices(COMMAND_KINDS, weights=(30 if ready < 2 else 6, 22, 4, 14, 6, 4, 3, 13, 4, 8, 4))[0]
        held = model.held[index]
        if kind == "put":
            body = self.body()
            self.max_id += len(body) <= MAX_JOB_SIZE
            ttr = r.choice([b"1", b"2", b"3"]) if self.timed else FAR
            return b"put %s %s %s %d\r\n%s\r\n" % (
                self.pri(), self.duration(b"1", b"2"), ttr, len(body), body), "reply"
        if kind == "reserve":
            if not may_block:
                return b"reserve-with-timeout 0\r\n", "reply"
            timeout = r.choice([b"1", b"2"] if self.timed else [FAR])
            return r.choice([b"reserve\r\n", b"reserve-with-timeout %s\r\n" % timeout]), "wait"
        if kind == "reserve-job":
            return b"reserve-job %s\r\n" % self.job_id(), "reply"
        if kind == "job":
            verb = r.choice([b"delete", b"touch", b"touch", b"kick-job", b"peek", b"stats-job"])
            return b"%s %s\r\n" % (verb, self.job_id(held)), "reply"
        if kind == "release":
            return b"release %s %s %s\r\n" % (self.job_id(held), self.pri(), self.duration(b"1", b"2")), "reply"
        if kind == "bury":
            return b"bury %s %s\r\n" % (self.job_id(held), self.pri()), "reply"
        if kind == "kick":
            return b"kick %s\r\n" % r.choice([b"1", b"2", b"10"]), "reply"
        if kind == "tube":
            verb = r.choice([b"use", b"watch", b"ignore", b"watch", b"ignore", b"stats-tube"])
            return b"%s %s\r\n" % (verb, r.choice(TUBES)), "reply"
        if kind == "pause":
            return b"pause-tube %s %s\r\n" % (r.choice(TUBES), self.duration(b"1", b"2")), "reply"
        if kind == "read":
            return r.choice([b"peek-ready", b"peek-delayed", b"peek-buried", b"list-tubes",
                             b"list-tube-used", b"list-tubes-watched", b"stats"]) + b"\r\n", "reply"
        return r.choice([(b"quit\r\n", "quit"), (b"", "close"), (b"", "half-close")])

    def cuts(self, data: bytes) -> list[int]:
        """Where to cut ``data`` into segments: mostly nowhere, sometimes at random bytes."""
        if len(data) < 2 or self.rng.random() < 0.7:
            return []
        return sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1, self.rng.randint(1, 3))))


# --------------------------------------------------------------------------- the run


class Run:
    """The reference and the target, driven by one generator, compared after every step."""

    def __init__(self, start_server, target_kind: str, seed: int, timed: bool, replay: str):
        self.reference = Side(start_server(REFERENCE, "-z", str(MAX_JOB_SIZE)), REFERENCE_SETTLE_S)
        self.target = Side(start_server(target_kind, "-z", str(MAX_JOB_SIZE)), TARGET_SETTLE_S)
        self.sides = [self.reference, self.target]
        self.generator = Generator(random.Random(seed), timed)
        self.model = Model()
        self.steps = 0
        self.ready = 0  # ready jobs after the last step, as the reference counted them
        self.history = [f"seed {seed} (replay: {replay}={seed})"]

    def close(self) -> None:
        for side in self.sides:
            side.close()

    def fail(self, why: str) -> None:
        lines = [why, self.history[0]] + self.history[-10:]
        for index in range(CONNECTIONS):
            for side in self.sides:
                conn = side.conns[index]
                lines.append(f"connection {index}, {side.target.kind}: "
                             + " ".join(repr(r) for r in conn.replies[-6:]) + (" <EOF>" if conn.eof else ""))
        pytest.fail("\n".join(lines))

    def may_block(self, index: int) -> bool:
        """A reserve on ``index`` may block only if no waiting connection watches a tube it
        watches (which of two waiters gets a job is 1.12's rotating order, not ours), and if
        another connection is left to send commands."""
        mine = set(self.model.watch[index])
        conns = self.reference.conns
        return sum(conn.waiting for conn in conns) < CONNECTIONS - 1 and all(
            not conn.waiting or not mine & set(self.model.watch[other]) for other, conn in enumerate(conns))

    def step(self) -> None:
        """One command on a connection that does not wait (or a waiting one hangs up), then
        both sides settle and are compared."""
        model, rng = self.model, self.generator.rng
        waiting = [i for i, conn in enumerate(self.reference.conns) if conn.waiting]
        if waiting and rng.random() < 0.05:  # a client gives up waiting
            index = rng.choice(waiting)
            data, kind = b"", rng.choice(["close", "half-close"])
        else:
            index = rng.choice([i for i, conn in enumerate(self.reference.conns) if not conn.waiting])
            data, kind = self.generator.command(index, model, self.may_block(index), self.ready)
        model.timed_wait[index] = kind == "wait" and data.startswith(b"reserve-with-timeout")
        self.history.append(f"step {self.steps} at {time.monotonic():.3f} conn {index}: {kind} {data[:80]!r}")
        self.steps += 1
        cuts = self.generator.cuts(data)
        for side in self.sides:
            conn = side.conns[index]
            if kind == "close":
                conn.close()
                conn.eof = True
            elif kind == "half-close":
                conn.sock.shutdown(socket.SHUT_WR)
            else:
                conn.expected += kind != "quit"
                conn.send(data, cuts)
        expected = self.reference.settle(index, kind)
        got = self.target.settle(index, kind, expected)
        self.ready = expected["current-jobs-ready"]
        for side in self.sides:  # a connection that ends first gets every reply it was owed
            conn = side.conns[index]
            deadline = time.monotonic() + side.settle_s
            while kind in ("quit", "half-close") and not conn.eof and time.monotonic() < deadline:
                conn.pump(0.01)
        self.compare(expected, got)
        for other, conn in enumerate(self.reference.conns):
            model.note_reserved(other, conn.replies)
        if self.reference.conns[index].replies and kind == "reply":
            model.track(index, data.split(b"\r\n", 1)[0], self.reference.conns[index].replies[-1])
        if self.reference.conns[index].eof:
            expected = self.reference.reconnect(index)
            self.compare(expected, self.target.reconnect(index, expected))
            model.reset(index)

    def compare(self, expected: dict, got: dict) -> None:
        for index in range(CONNECTIONS):
            ours, theirs = self.reference.conns[index], self.target.conns[index]
            if ours.replies != theirs.replies or ours.eof != theirs.eof:
                self.fail(f"connection {index} differs")
        if got != expected:
            self.fail(f"{REFERENCE}: {expected}\ntarget: {got}")

    def idle_until(self, until: float) -> None:
        """Sends nothing to the target until ``until``; the reference's connections that do
        not wait are poked every ``POKE_S`` (1.12 may skip a silent holder's TTR expiry
        otherwise, §13 of the reference; the poke's reply is not part of the transcript)."""
        poked = [side for side in self.sides if side.target.kind == REFERENCE]  # both, checking the harness
        while (left := until - time.monotonic()) > 0:
            for side in poked:
                side.pump_all()  # a reserve answered meanwhile: its job's holder is silent now
                for conn in side.conns:
                    if not conn.waiting and not conn.eof:
                        conn.poke()
            time.sleep(min(left, POKE_S))

    def quiet(self) -> bool:
        """True when the reference has no timer left: nothing delayed, reserved or paused,
        and no reserve waits with a timeout."""
        shot = self.reference.snapshot(tubes=True)
        self.reference.pump_all()
        waits = any(conn.waiting and timed for conn, timed in zip(self.reference.conns, self.model.timed_wait))
        paused = any(shot[name] and shot[name][-1] != b"pause: 0" for name in TUBES)
        return shot["current-jobs-delayed"] == shot["current-jobs-reserved"] == 0 and not waits and not paused

    def wait_quiet(self) -> None:
        """Lets every timer of the episode fire, then compares both servers."""
        deadline = time.monotonic() + QUIET_S
        while not self.quiet():
            if time.monotonic() > deadline:
                self.fail(f"{REFERENCE} still has timers {QUIET_S} s after the last command")
            self.idle_until(time.monotonic() + 0.1)
        # Poke a few more times: when the harness checks itself, the second beanstalkd may still
        # hold a job whose TTR ended as the reference became quiet.
        self.idle_until(time.monotonic() + 5 * POKE_S)
        expected = self.reference.settle(None, "none")
        self.compare(expected, self.target.settle(None, "none", expected))
