"""Differential fuzzing: a target must answer a seeded random stream of valid and invalid command
lines exactly as beanstalkd 1.12 does.

Method: start the reference and the target side by side in one test, open the same connections to
both, and send each the same steps -- a `use`, one to four pipelined lines (valid commands,
mutated ones, overlong lines, bad bodies, bodies of the largest size `-z` allows), then a sentinel
`use s<step>` whose unique reply marks the end of the step; a step's bytes are sometimes sent in
pieces cut at random bytes. Replies are split structurally and compared byte by byte, except
values that depend on the clock or on the process (job age and time-left, pause-time-left, pid,
uptime, ...). Durations are chosen so no timer fires during the run. A failure prints the seed and
the step, and ``BEANRAFT_FUZZ_SEEDS=<seed>`` replays it; running the reference against itself
checks the harness.
"""

from __future__ import annotations

import difflib
import itertools
import os
import random
import re
import time

import pytest

REFERENCE = "beanstalkd"
MAX_JOB_SIZE = 64
STEPS = 250
CONNECTIONS = 2
#: How long the reference may stay silent before a step counts as stalled (e.g. a put whose size
#: was mutated upwards reads the sentinel as body). The target then gets a short grace period;
#: when the reference did answer, the target gets TARGET_TIMEOUT_S.
STALL_S = 0.5
TARGET_TIMEOUT_S = 3.0
TUBES = [b"default", b"a", b"b", b"c-1"]
#: Values that belong to the clock or the process, not to the command stream, by reply kind.
MASKED = {
    b"stats-job": {b"age", b"time-left"},
    b"stats-tube": {b"pause-time-left"},
    b"stats": {b"pid", b"version", b"rusage-utime", b"rusage-stime", b"uptime", b"total-connections",
               b"cmd-list-tube-used", b"id", b"hostname", b"os", b"platform", b"binlog-oldest-index",
               b"binlog-current-index", b"binlog-records-migrated", b"binlog-records-written"},
}


def fuzz_seeds() -> list[int]:
    text = os.environ.get("BEANRAFT_FUZZ_SEEDS", "1,2,3")
    return [random.SystemRandom().randrange(2**32) if s == "random" else int(s) for s in text.split(",")]


# --------------------------------------------------------------------------- the generator


class Generator:
    """Seeded lines: valid commands with durations far from any timer, and mutations of them."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.max_id = 0

    def job_id(self) -> bytes:
        return b"%d" % self.rng.randint(0, self.max_id + 2)

    def pri(self) -> bytes:
        return self.rng.choice([b"0", b"1", b"1023", b"1024", b"65536", b"4294967295"])

    def delay(self) -> bytes:  # 0, or long enough (after one digit is deleted) not to expire
        return self.rng.choice([b"0", b"0", b"0", b"1000", b"4294967295"])

    def body(self) -> bytes:
        # No lone CR: when a mutated header is refused, the body is read as a command line, and a
        # CR without LF makes the server wait for more (§1.1), swallowing the sentinel.
        pieces = [b"a", b"b", b"\r\n", b"\n", b"\x00", b" ", b"\xff"]
        return b"".join(self.rng.choice(pieces) for _ in range(self.rng.randint(0, 8)))

    def valid(self) -> bytes:
        r = self.rng
        kind = r.randrange(100)
        if kind < 25:
            body = self.body()
            self.max_id += 1
            ttr = r.choice([b"3600", b"1200", b"4294967295"])  # never 0 or 1, even mutated
            return b"put %s %s %s %d\r\n%s" % (self.pri(), self.delay(), ttr, len(body), body)
        if kind < 32:
            return b"reserve-with-timeout 0"
        if kind < 37:
            return b"reserve-job " + self.job_id()
        if kind < 55:
            verb = r.choice([b"delete", b"touch", b"kick-job", b"peek", b"stats-job"])
            return verb + b" " + self.job_id()
        if kind < 62:
            return b"release %s %s %s" % (self.job_id(), self.pri(), self.delay())
        if kind < 67:
            return b"bury %s %s" % (self.job_id(), self.pri())
        if kind < 70:
            return b"kick " + r.choice([b"0", b"1", b"2", b"10"])
        if kind < 76:
            return r.choice([b"peek-ready", b"peek-delayed", b"peek-buried", b"list-tubes", b"list-tube-used",
                             b"list-tubes-watched"])
        if kind < 88:
            return r.choice([b"use ", b"watch ", b"ignore ", b"stats-tube "]) + r.choice(TUBES)
        if kind < 92:
            return b"pause-tube %s %s" % (r.choice(TUBES), r.choice([b"0", b"1000"]))
        return b"stats"

    def mutated(self) -> bytes:
        r = self.rng
        line = self.valid()
        if line.startswith(b"reserve-with-timeout"):
            return r.choice([b"reserve-with-timeout", b"reserve-with-timeout x", b"reserve-with-timeout  0",
                             b"reserve-with-timeout 99999999999999999999", b"reserve-with-timeout 0 "])
        head, sep, body = line.partition(b"\r\n")
        # A put header must not gain a space or a larger size: shifted arguments would make the
        # ttr the size, and the server would then read (or drain) that many bytes of later steps.
        is_put = bool(sep)
        op = r.randrange(6)
        if op == 0 and head:
            at = r.randrange(len(head))
            head = head[:at] + head[at + 1:]
        elif op == 1:
            at = r.randrange(len(head) + 1)
            extra = [b"\t", b"x", b"-", b"+", b"\x00", b"\n"] + ([] if is_put else [b" "])
            head = head[:at] + r.choice(extra) + head[at:]
        elif op == 2:
            head = head.upper()
        elif op == 3:
            head += r.choice([b" ", b" junk", b" 1"])
        elif op == 4:
            words = head.split(b" ")
            if len(words) > 1:
                last = len(words) - (2 if is_put else 1)
                words[r.randint(1, max(1, last))] = r.choice(
                    [b"-1", b"4294967296", b"18446744073709551616", b"abc", b"", b"0070"])
            head = b" ".join(words)
        else:
            head = r.choice([b"", b" ", b"nonsense", b"PUT", b"quitx" if r.random() < 0.1 else b"qui"])
        if head.startswith(b"reserve") and not head.startswith((b"reserve-job", b"reserve-with-timeout")):
            head = b"reserve-" + head  # a bare reserve would block the rest of the run
        return head + sep + body

    def odd(self) -> bytes:
        """Framing trouble that still ends at a CRLF: overlong lines, oversized or bad bodies."""
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:
            return b"x" * r.choice([230, 300, 500])
        if kind == 1:
            size = r.randint(MAX_JOB_SIZE + 1, MAX_JOB_SIZE + 20)
            return b"put 0 0 60 %d\r\n%s" % (size, b"y" * size)
        if kind == 4:  # the largest body -z allows, or one byte less
            self.max_id += 1
            size = r.choice([MAX_JOB_SIZE, MAX_JOB_SIZE - 1])
            return b"put 0 0 60 %d\r\n%s" % (size, bytes(r.choice(b"z\r\n") for _ in range(size)))
        if kind == 2:  # a body longer than announced: EXPECTED_CRLF, the rest is one more line
            self.max_id += 1
            return b"put 0 0 60 2\r\nabcd"
        return b"use " + b"n" * r.choice([199, 200, 201])

    def step(self) -> list[bytes]:
        lines = []
        for _ in range(self.rng.choice([1, 1, 1, 2, 3, 4])):
            roll = self.rng.random()
            lines.append(self.valid() if roll < 0.7 else self.mutated() if roll < 0.95 else self.odd())
        return lines


# --------------------------------------------------------------------------- reading replies


def cut_points(rng: random.Random, data: bytes) -> list[int]:
    """Where a step's bytes are cut into separate segments: mostly nowhere, else at one to
    three random bytes (inside a line, between CR and LF, inside a body). Never a step that
    quits: a piece sent after the server closed would make it reset the connection."""
    if rng.random() < 0.7 or b"quit" in data:
        return []
    return sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 3))))


def send_in_pieces(wire, data: bytes, cuts: list[int]) -> None:
    """Sends ``data`` cut at ``cuts``, pausing a moment after each piece so each is read alone."""
    start = 0
    for at in cuts:
        wire.send(data[start:at])
        time.sleep(0.001)
        start = at
    wire.send(data[start:])


def read_replies(wire, sentinel: bytes, deadline: float) -> list[bytes]:
    """Replies before `sentinel`, each with its body; ends early at EOF or the deadline."""
    replies = []
    while (line := wire.try_read_line(deadline)) != sentinel:
        if line is None:
            replies.append(b"<EOF>" if wire.at_eof else b"<silence> " + wire.take_pending())
            return replies
        words = line.split(b" ")
        if words[0] in (b"RESERVED", b"FOUND", b"OK") and words[-1].isdigit():
            body = wire.try_read_exactly(int(words[-1]) + 2, deadline)
            line += b"\r\n" + (b"<cut> " + wire.take_pending() if body is None else body)
            line = masked(line) if words[0] == b"OK" else line
        replies.append(line)
    return replies


def masked(reply: bytes) -> bytes:
    """An `OK` YAML reply with clock- and process-dependent values (and hence its length) hidden."""
    body = reply.partition(b"\r\n")[2]
    kind = b"stats-job" if b"\nstate: " in body else b"stats-tube" if body.startswith(b"---\nname: ") else (
        b"stats" if b"\ncmd-put: " in body else b"list")
    hidden = MASKED.get(kind, set())
    return b"OK *" + re.sub(
        rb"\n([a-z-]+): [^\n]*", lambda m: b"\n" + m.group(1) + b": *" if m.group(1) in hidden else m.group(0), body)


def first_difference(expected: list[bytes], got: list[bytes]) -> str:
    """A line diff of the first reply that differs (YAML bodies are long)."""
    for ours, theirs in itertools.zip_longest(expected, got, fillvalue=b""):
        if ours != theirs:
            return "\n".join(difflib.unified_diff(
                [repr(x) for x in ours.split(b"\n")], [repr(x) for x in theirs.split(b"\n")],
                REFERENCE, "target", lineterm="", n=1))
    return ""


# --------------------------------------------------------------------------- the test


class Side:
    """One server and its connections, reconnecting when a `quit…` closed one."""

    def __init__(self, target):
        self.target = target
        self.wires = [target.connect() for _ in range(CONNECTIONS)]

    def reconnect(self, index: int) -> None:
        self.wires[index].close()
        self.wires[index] = self.target.connect()


@pytest.mark.parametrize("seed", fuzz_seeds())
def test_a_target_answers_a_random_command_stream_exactly_like_the_reference(start_server, target_kind, seed):
    reference = Side(start_server(REFERENCE, "-z", str(MAX_JOB_SIZE)))
    other = Side(start_server(target_kind, "-z", str(MAX_JOB_SIZE)))
    rng = random.Random(seed)
    cutter = random.Random(seed + 1_000_003)  # its own stream: a seed's commands stay the same
    generator = Generator(rng)
    history: list[str] = []
    for step in range(STEPS):
        index = rng.randrange(CONNECTIONS)
        sentinel = b"USING s%d" % step
        data = b"use %s\r\n" % rng.choice(TUBES) + b"".join(
            line + b"\r\n" for line in generator.step()) + b"use s%d\r\n" % step
        cuts = cut_points(cutter, data)
        history.append(f"step {step} conn {index}: {data!r}" + (f" cut at {cuts}" if cuts else ""))
        for side in (reference, other):
            send_in_pieces(side.wires[index], data, cuts)
        expected = read_replies(reference.wires[index], sentinel, time.monotonic() + STALL_S)
        stalled = expected and expected[-1].startswith(b"<silence>")
        grace_s = 0.1 if stalled else TARGET_TIMEOUT_S
        got = read_replies(other.wires[index], sentinel, time.monotonic() + grace_s)
        if got != expected:
            pytest.fail(
                f"seed {seed} (replay: BEANRAFT_FUZZ_SEEDS={seed}), step {step}, connection {index}\n"
                + "\n".join(history[-8:])
                + "\nbeanstalkd:\n  " + "\n  ".join(map(repr, expected))
                + f"\n{target_kind}:\n  " + "\n  ".join(map(repr, got))
                + "\nfirst differing reply:\n" + first_difference(expected, got))
        if expected and expected[-1] == b"<EOF>":
            reference.reconnect(index)
            other.reconnect(index)
