"""Bugs the fault suite found, pinned down in-process so they stay fixed.

Method: drive one ``ClientConnection`` through a fake node whose group commit hands out futures
the test resolves by hand, so a schedule that needed a partition and a retried Raft batch to
happen can be replayed exactly.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from polling import until

from beanraft.node.closes import LingeringCloses
from beanraft.node.connection import ClientConnection


class FakeCommit:
    def __init__(self):
        self.submitted: list[tuple[tuple, asyncio.Future]] = []

    def submit(self, command: tuple) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.submitted.append((command, fut))
        return fut

    def flush_now(self) -> None:
        pass  # the test settles each submitted future itself


class FakeTransport:
    def __init__(self):
        self.data = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def set_write_buffer_limits(self, high: int, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default=None):
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def fake_node(commit: FakeCommit) -> SimpleNamespace:
    noop = lambda *a, **k: None  # noqa: E731
    node = SimpleNamespace(
        config=SimpleNamespace(max_job_size=65535, clustered=True), new_sid=lambda: 1 << 32 | 1,
        connection_opened=noop, connection_closed=noop, session_closed=noop,
        count_command=noop, count_name=noop, waiting_off_the_log=noop, draining=False,
        refuses=lambda req: False, commit=commit, auth=None, unread=0,
        raft=SimpleNamespace(journal_failed=lambda: False))
    node.lingering = LingeringCloses(node)
    return node


async def _proposed(commit, count: int, timeout_s: float = 2.0) -> None:
    await until(lambda: f"{count} commands proposed, not {len(commit.submitted)}",
                lambda: len(commit.submitted) == count, timeout_s, step_s=0.001)


async def _written(transport, predicate) -> None:
    await until(lambda: f"a reply, not {transport.data!r}", lambda: predicate(transport.data), 2.0,
                step_s=0.001)


def test_a_reserve_answered_from_the_reply_cache_leaves_no_stale_event_for_the_next_reserve():
    """Seed 12 of tests/tools/soak.py: a worker got RESERVED for a job it had just deleted.

    Its reserve-with-timeout was proposed while its node was cut off; the batch was retried,
    and two copies committed. The first registered the wait and, when a job came, resolved it:
    the outcome went out as an event (into the connection's mailbox) and replaced the cached
    reply. The second copy was answered from that cache, so the connection wrote RESERVED from
    the batch's reply and left the event in the mailbox, where the *next* blocking reserve
    found it and answered RESERVED for the same, since deleted, job.
    """

    async def scenario():
        commit = FakeCommit()
        conn = ClientConnection(fake_node(commit))
        transport = FakeTransport()
        conn.connection_made(transport)
        try:
            await steps(commit, conn, transport)
        finally:  # let the connection finish whatever happened: answer everything it asked
            conn.eof_received()
            for _ in range(100):
                for _command, fut in commit.submitted:
                    if not fut.done():
                        fut.set_result(("OK",))
                if conn.task.done():
                    break
                await asyncio.sleep(0.01)

    async def steps(commit, conn, transport):
        # A blocking reserve goes out first as one that never waits; a miss is reserved again
        # for real, blocking, and that is the reserve whose wait registers and gets events.
        conn.data_received(b"reserve-with-timeout 5\r\n")
        await _proposed(commit, 2)  # OPEN, then RESERVE that never waits
        (_open, opened), (_reserve, quick) = commit.submitted
        assert _reserve[-1] == 0, "the first try of a blocking reserve never waits"
        opened.set_result(("OK",))
        quick.set_result(("TIMED_OUT",))
        await _proposed(commit, 3)  # the same reserve, blocking
        first = commit.submitted[2][1]
        conn.deliver(("RESERVED", 106, b"x"))  # the event of the first committed copy ...
        first.set_result(("RESERVED", 106, b"x"))  # ... and the retry's cached reply
        await _written(transport, lambda data: data == b"RESERVED 106 1\r\nx\r\n")
        conn.data_received(b"reserve-with-timeout 5\r\n")
        await _proposed(commit, 4)
        commit.submitted[3][1].set_result(("TIMED_OUT",))  # its try that never waits misses
        await _proposed(commit, 5)
        commit.submitted[4][1].set_result(("WAITING",))
        await asyncio.sleep(0.05)
        assert transport.data == b"RESERVED 106 1\r\nx\r\n", "a stale event answered the reserve"
        conn.deliver(("TIMED_OUT",))
        await _written(transport, lambda data: data.endswith(b"TIMED_OUT\r\n"))

    asyncio.run(scenario())


def test_a_close_that_cannot_commit_is_proposed_again_until_it_does():
    """A client of a follower hung up while the cluster had no leader for longer than the commit
    timeout. The session's CLOSE ended with the outcome unknown and was never proposed again, so
    the session stayed open in the replicated state, its blocking reserve still registered: the
    next job put after the cluster recovered was reserved by that ghost until its TTR ran out,
    while a live worker got TIMED_OUT (reproduced with three processes: pause the leader and the
    other follower for 4 s with --commit-timeout 2). The CLOSE must be proposed until it commits.
    """
    from beanraft.replication.batcher import OutcomeUnknown

    async def scenario():
        commit = FakeCommit()
        conn = ClientConnection(fake_node(commit))
        transport = FakeTransport()
        conn.connection_made(transport)
        conn.data_received(b"reserve-with-timeout 100\r\n")
        await _proposed(commit, 2)
        commit.submitted[0][1].set_result(("OK",))
        commit.submitted[1][1].set_result(("WAITING",))
        await asyncio.sleep(0.01)
        conn.eof_received()  # the client hangs up while its reserve waits
        conn.connection_lost(None)
        await _proposed(commit, 3)
        close = commit.submitted[2][0]
        assert close[0].name == "CLOSE"
        commit.submitted[2][1].set_exception(OutcomeUnknown("no leader"))
        await _proposed(commit, 4, timeout_s=5)
        assert commit.submitted[3][0] == close, "the same CLOSE (same session and seq) again"
        commit.submitted[3][1].set_result(("TIMED_OUT",))
        await asyncio.sleep(0.05)
        assert len(commit.submitted) == 4, "nothing more once it committed"

    asyncio.run(scenario())


def test_a_frozen_followers_reservations_are_released_about_one_node_grace_after_it_fell_silent(
        tmp_path):
    """--node-grace counts from the peer's last answer, not from when the leader noticed.

    The leader's watch first waited until the peer had been silent for the grace, and only then
    started the grace period: a SIGSTOPped follower was declared dead after about twice the
    grace (5.9 s with --node-grace 3, 9.9 s with 5).
    """
    import time

    from faultkit.client import Conn
    from faultkit.cluster import Cluster

    grace_s = 2.0
    with Cluster(tmp_path, layout="loopback", node_grace_s=grace_s) as cluster:
        assert cluster.wait_ready(60)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        worker = Conn(follower.spec.client)
        assert worker.call("put 0 0 600 1", b"x")[0] == "INSERTED"
        job = worker.call("reserve-with-timeout 0")
        assert job[0] == "RESERVED"
        observer = Conn(leader.spec.client)
        follower.pause()
        paused_at = time.monotonic()
        try:
            while observer.stats(f"stats-job {job[1]}")["state"] == "reserved":
                assert time.monotonic() - paused_at < 10, "never released"
                time.sleep(0.05)
            released_after = time.monotonic() - paused_at
        finally:
            follower.resume()
            worker.close()
            observer.close()
        assert released_after < grace_s + 1.5, f"released {released_after:.1f} s after the pause"
