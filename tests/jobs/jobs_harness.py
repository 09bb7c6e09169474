"""A test harness for the job state machine: one machine, a virtual clock, sessions with seqs.

Every batch goes through ``Harness.batch``, which checks the machine's invariants afterwards, so
each test also checks that no command leaves gauges, heaps or timers out of step.
"""

from __future__ import annotations

from beanraft.jobs.commands import Op
from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine

S = 1_000_000_000  # one second in nanoseconds
T0 = 1_700_000_000 * S  # an arbitrary wall-clock start


class Harness:
    """Drives a Machine at virtual time ``now`` (ns); ``cmd`` applies one command right now."""

    def __init__(self, max_job_size: int = 65535, node: str = "node-a") -> None:
        self.m = Machine(max_job_size=max_job_size)
        self.now = T0
        self.seqs: dict[int, int] = {}
        self.events: list[tuple[int, tuple]] = []
        self.counters: dict[int, int] = {}
        self.epoch = self.start_node(node)

    def batch(self, commands: list, now: int | None = None) -> tuple[list, list]:
        """Apply ``commands`` at ``now`` (default: the harness clock); check invariants."""
        if now is not None:
            self.now = now
        replies, events = self.m.apply_batch(self.now, commands)
        assert problems(self.m) == []
        self.events += events
        return replies, events

    def start_node(self, node: str) -> int:
        """NODE_START ``node``; returns its epoch."""
        (reply,), _ = self.batch([(Op.NODE_START, 0, 0, node)])
        assert reply[0] == "EPOCH"
        return reply[1]

    def next_seq(self, sid: int) -> int:
        self.seqs[sid] = self.seqs.get(sid, 0) + 1
        return self.seqs[sid]

    def open(self, epoch: int | None = None) -> int:
        """Open a new session of ``epoch`` (default: this harness's node); returns its sid."""
        epoch = self.epoch if epoch is None else epoch
        self.counters[epoch] = self.counters.get(epoch, 0) + 1
        sid = (epoch << 32) | self.counters[epoch]
        assert self.cmd(sid, Op.OPEN) == ("OK",)
        return sid

    def cmd(self, sid: int, op: Op, *args) -> tuple:
        """Apply one command of session ``sid`` now; returns its reply."""
        (reply,), _ = self.batch([(op, sid, self.next_seq(sid), *args)])
        return reply

    def put(self, sid: int, body: bytes = b"x", pri: int = 0, delay: float = 0,
            ttr: float = 60) -> int:
        """PUT with durations in seconds; returns the new job id."""
        reply = self.cmd(sid, Op.PUT, pri, int(delay * S), int(ttr * S), body)
        assert reply[0] == "INSERTED", reply
        return reply[1]

    def advance(self, seconds: float = 0, ns: int = 0) -> list[tuple[int, tuple]]:
        """Move the clock forward and apply a TICK; returns the events it caused."""
        self.now += int(seconds * S) + ns
        _, events = self.batch([(Op.TICK, 0, 0)])
        return events

    def stats_job(self, job_id: int) -> dict:
        fields = self.m.stats_job(job_id, self.now)
        return None if fields is None else dict(fields)

    def stats_tube(self, name: str) -> dict:
        fields = self.m.stats_tube(name, self.now)
        return None if fields is None else dict(fields)


def harness(rules: int = 1) -> Harness:
    """A fresh harness whose machine applies rules version ``rules`` (every log starts at 1)."""
    h = Harness()
    if rules > 1:
        (reply,), _ = h.batch([(Op.RULES, 0, 0, rules)])
        assert reply == ("RULES", rules)
    return h
