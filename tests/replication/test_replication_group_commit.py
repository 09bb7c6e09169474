"""Group commit proposes a batch again until it has a definite outcome, ignores the late answer
of a try it gave up on, and only then proposes the commands queued behind it.

Method: ``GroupCommit`` on a real event loop, in front of a recording stand-in for the Raft node
that answers only when the test says so, so every interleaving below is chosen, not timed. The
real Raft node behind it is driven by tests/replication/test_replication_upstream_defects.py.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raft_trio import until

from beanraft.replication import batcher
from beanraft.replication.batcher import GroupCommit, OutcomeUnknown
from beanraft.replication.bridge import CommitError
from beanraft.replication.codec import decode_entry


class RecordingRaft:
    """Records each proposal (its commands and its outcome callback); answers nothing itself."""

    keeps_proposals = False  # as a cluster's node: a try may be lost

    def __init__(self, loop):
        self.loop = loop
        self.proposals: list[tuple[list, object]] = []

    def cluster_now_ns(self) -> int:
        return time.time_ns()

    def journal_failed(self) -> bool:
        return False

    def submit(self, parts, overlap: bool = False) -> asyncio.Future:
        _now, commands = decode_entry(b"".join(parts))
        fut = self.loop.create_future()

        def answer(replies, err):
            if not fut.done():  # a try given up on was cancelled
                fut.set_exception(err) if err is not None else fut.set_result(replies)

        self.proposals.append((commands, answer))
        return fut


def _watched_group(**timeouts) -> tuple[RecordingRaft, GroupCommit, list]:
    """Group commit in front of a recording stand-in on the running loop, and the list of what
    asyncio reports from now on ("exception was never retrieved", ...)."""
    loop = asyncio.get_running_loop()
    reported: list = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    raft = RecordingRaft(loop)
    return raft, GroupCommit(raft, **timeouts), reported


async def _proposals(raft, count: int) -> None:
    """Wait until the stand-in has recorded ``count`` proposals in all."""
    await until(lambda: f"{count} proposals, not {len(raft.proposals)}",
                lambda: len(raft.proposals) == count, 5.0, 0.001)


async def _goes_out_and_commits(commit, raft, command) -> None:
    """``command`` is proposed as a batch of its own at once, and its reply reaches its future."""
    before = len(raft.proposals)
    fut = commit.submit(command)
    await _proposals(raft, before + 1)
    assert raft.proposals[-1][0] == [command]
    raft.proposals[-1][1]([("DELETED",)], None)
    assert await fut == ("DELETED",)


def test_a_refused_try_is_proposed_again_and_a_late_answer_to_a_try_given_up_on_is_ignored():
    async def scenario():
        raft = RecordingRaft(asyncio.get_running_loop())
        commit = GroupCommit(raft, try_timeout_s=0.05, commit_timeout_s=5.0)
        fut = commit.submit((3, 1, 2, 0, 0, 60, b"body"))
        await _proposals(raft, 1)
        later = commit.submit((9, 1, 3, 1))
        raft.proposals[0][1](None, CommitError(5))  # LEADER_CHANGED: the outcome is unknown
        await _proposals(raft, 2)  # proposed again, unchanged
        assert raft.proposals[1][0] == raft.proposals[0][0]
        await _proposals(raft, 3)  # the second try timed out: a third
        raft.proposals[1][1]([("INSERTED", 1)], None)  # the given-up second try answers late
        await asyncio.sleep(0.01)
        assert not fut.done() and len(raft.proposals) == 3
        raft.proposals[2][1]([("INSERTED", 1)], None)
        assert await fut == ("INSERTED", 1)
        # Only now, behind it, the command submitted while it was in flight.
        await _proposals(raft, 4)
        assert raft.proposals[3][0] == [(9, 1, 3, 1)]
        raft.proposals[3][1]([("DELETED",)], None)
        assert await later == ("DELETED",)

    asyncio.run(scenario())


def test_a_first_try_that_commits_is_settled_by_its_own_callback_without_a_task():
    # The usual batch: its replies are given from the try's future callback, a turn of the loop
    # after the answer, not by a task that awaited it.
    async def scenario():
        raft, commit, reported = _watched_group(try_timeout_s=5.0, commit_timeout_s=10.0)
        fut = commit.submit((9, 1, 1, 7))
        await _proposals(raft, 1)
        assert not commit._tasks
        raft.proposals[0][1]([("DELETED",)], None)
        assert await fut == ("DELETED",)
        assert not commit._tasks and commit.batches == 1
        await _goes_out_and_commits(commit, raft, (9, 1, 2, 8))  # the first is finished
        assert reported == []

    asyncio.run(scenario())


@pytest.mark.parametrize("late", [([("NOT_FOUND",)], None), (None, CommitError(5))],
                         ids=["late reply", "late failure"])
def test_the_late_outcome_of_a_first_try_that_timed_out_is_ignored_and_never_reported(late):
    # The try's future was given up on: its late reply must not settle the batch, and a late
    # CommitError must not reach asyncio's "exception was never retrieved" report either.
    async def scenario():
        raft, commit, reported = _watched_group(try_timeout_s=0.05, commit_timeout_s=10.0)
        fut = commit.submit((9, 1, 1, 7))
        await _proposals(raft, 2)  # the first try timed out: a second
        assert raft.proposals[1][0] == raft.proposals[0][0]
        raft.proposals[0][1](*late)  # the first try's outcome comes late
        await asyncio.sleep(0.01)
        assert not fut.done() and commit.batches == 0
        raft.proposals[1][1]([("DELETED",)], None)
        assert await fut == ("DELETED",)
        await asyncio.sleep(0.01)
        assert commit.batches == 1
        del raft, commit  # the last references to the first try's future
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []

    asyncio.run(scenario())


def test_a_batch_without_a_definite_outcome_by_the_commit_timeout_fails_as_unknown():
    async def scenario():
        raft = RecordingRaft(asyncio.get_running_loop())
        commit = GroupCommit(raft, try_timeout_s=0.02, commit_timeout_s=0.2)
        fut = commit.submit((9, 1, 1, 7))
        with pytest.raises(OutcomeUnknown):
            await asyncio.wait_for(fut, 5.0)
        tries = len(raft.proposals)
        assert tries >= 2 and all(p[0] == [(9, 1, 1, 7)] for p in raft.proposals)
        await _goes_out_and_commits(commit, raft, (9, 1, 2, 8))  # the group goes on

    asyncio.run(scenario())


def test_an_abandoned_command_that_fails_as_unknown_is_not_reported_as_unretrieved():
    # A closing connection drops the futures of its queued commands without awaiting them; their
    # OutcomeUnknown is expected and must not reach asyncio's "exception never retrieved" report.
    async def scenario():
        raft, commit, reported = _watched_group(try_timeout_s=0.02, commit_timeout_s=0.1)
        abandoned = [commit.submit((9, 1, seq, 7)) for seq in (1, 2)]
        await until("both abandoned commands to fail",
                    lambda: all(f.done() for f in abandoned), 5.0)
        assert all(isinstance(f.exception(), OutcomeUnknown) for f in abandoned[:1])
        del abandoned  # the second is never looked at, as a closed connection's
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []
        with pytest.raises(OutcomeUnknown):  # whoever does await one still gets its error
            await commit.submit((9, 1, 3, 7))

    asyncio.run(scenario())


def test_a_batch_stops_at_its_byte_bound_and_the_rest_goes_in_the_next():
    async def scenario():
        raft = RecordingRaft(asyncio.get_running_loop())
        commit = GroupCommit(raft, max_batch_bytes=2000, try_timeout_s=5.0)
        puts = [(3, 1, seq, 0, 0, 60, b"x" * 1000) for seq in (1, 2, 3, 4)]
        futs = [commit.submit(c) for c in puts]
        await _proposals(raft, 1)
        assert raft.proposals[0][0] == puts[:2]  # the second crosses the bound: no third
        raft.proposals[0][1]([("INSERTED", 1), ("INSERTED", 2)], None)
        await _proposals(raft, 2)
        assert raft.proposals[1][0] == puts[2:]
        raft.proposals[1][1]([("INSERTED", 3), ("INSERTED", 4)], None)
        small = commit.submit((9, 1, 5, 1))  # the weight of the queue went back to nothing
        await _proposals(raft, 3)
        assert raft.proposals[2][0] == [(9, 1, 5, 1)]
        raft.proposals[2][1]([("DELETED",)], None)
        assert [await f for f in futs] == [("INSERTED", n) for n in (1, 2, 3, 4)]
        assert await small == ("DELETED",)

    asyncio.run(scenario())


def _answer(proposal, ok: bool = True) -> None:
    """Answer a recorded try: a reply per command naming its seq, or a leader change."""
    commands, answer = proposal
    if ok:
        answer([("DELETED", command[2]) for command in commands], None)
    else:
        answer(None, CommitError(5))


def test_with_two_batches_in_flight_a_session_waits_for_the_batch_that_holds_it():
    async def scenario():
        raft = RecordingRaft(asyncio.get_running_loop())
        commit = GroupCommit(raft, max_inflight=2, try_timeout_s=5.0)
        first = [commit.submit((9, sid, 1, 7)) for sid in (1, 2)]
        await _proposals(raft, 1)
        later = [commit.submit((9, 1, 2, 7)), commit.submit((9, 3, 1, 7))]
        await _proposals(raft, 2)
        assert raft.proposals[1][0] == [(9, 3, 1, 7)]  # session 1 has a batch in flight
        _answer(raft.proposals[1])
        assert await later[1] == ("DELETED", 1)
        await asyncio.sleep(0.01)
        assert len(raft.proposals) == 2 and not later[0].done()  # still behind its first batch
        _answer(raft.proposals[0])
        assert [await f for f in first] == [("DELETED", 1)] * 2
        await _proposals(raft, 3)
        assert raft.proposals[2][0] == [(9, 1, 2, 7)]
        _answer(raft.proposals[2])
        assert await later[0] == ("DELETED", 2)

    asyncio.run(scenario())


def test_a_batch_proposed_again_keeps_its_sessions_later_commands_behind_it():
    # The overtaking that one batch in flight used to prevent: the first batch is refused (its
    # leader stepped down) while a second commits. Session 1's next command must not go out
    # before session 1's first has committed on a later try.
    async def scenario():
        raft = RecordingRaft(asyncio.get_running_loop())
        commit = GroupCommit(raft, max_inflight=2, try_timeout_s=5.0)
        opened = commit.submit((1, 1, 1))  # session 1's OPEN
        await _proposals(raft, 1)
        put = commit.submit((3, 1, 2, 0, 0, 60, b"x"))
        other = commit.submit((9, 2, 1, 7))
        await _proposals(raft, 2)
        assert raft.proposals[1][0] == [(9, 2, 1, 7)]
        _answer(raft.proposals[0], ok=False)  # the OPEN's try is lost
        _answer(raft.proposals[1])
        assert await other == ("DELETED", 1)
        await _proposals(raft, 3)
        assert raft.proposals[2][0] == [(1, 1, 1)]  # the OPEN again, and the put still waits
        await asyncio.sleep(0.05)
        assert len(raft.proposals) == 3 and not put.done()
        _answer(raft.proposals[2])
        assert await opened == ("DELETED", 1)
        await _proposals(raft, 4)
        assert raft.proposals[3][0] == [(3, 1, 2, 0, 0, 60, b"x")]
        _answer(raft.proposals[3])
        assert await put == ("DELETED", 2)

    asyncio.run(scenario())


_STEPS = st.lists(st.tuples(st.sampled_from(["submit", "submit", "commit", "refuse"]),
                            st.integers(0, 4)), max_size=40)


@settings(max_examples=120, deadline=None)
@given(steps=_STEPS)
def test_any_order_of_answers_keeps_every_sessions_commands_in_order(steps):
    # Sessions 0-4 submit commands; tries are committed or refused in a random order. However
    # that goes, two tries out at once never hold the same session, each session's commands are
    # first proposed and committed in the order it sent them, and every command ends with its
    # own reply.
    async def scenario():
        raft = RecordingRaft(asyncio.get_running_loop())
        commit = GroupCommit(raft, max_inflight=2, try_timeout_s=60.0, commit_timeout_s=600.0)
        seqs, futs, answered = collections.Counter(), [], set()
        committed = collections.defaultdict(list)

        async def answer(pick: int, ok: bool) -> None:
            out = [i for i in range(len(raft.proposals)) if i not in answered]
            if out:
                index = out[pick % len(out)]
                answered.add(index)
                if ok:
                    for command in raft.proposals[index][0]:
                        committed[command[1]].append(command[2])
                _answer(raft.proposals[index], ok)
            for _ in range(6):  # the try's callback, a retry's task and its pause
                await asyncio.sleep(0)

        def check() -> None:
            out = [{c[1] for c in raft.proposals[i][0]}
                   for i in range(len(raft.proposals)) if i not in answered]
            assert sum(len(sids) for sids in out) == len(set().union(*out))
            first = collections.defaultdict(list)
            seen = set()
            for commands, _ in raft.proposals:
                for command in commands:
                    if command[1:3] not in seen:
                        seen.add(command[1:3])
                        first[command[1]].append(command[2])
            for sid, order in first.items():
                assert order == list(range(1, len(order) + 1)), (sid, order)
            for sid, order in committed.items():
                assert order == sorted(order), (sid, order)

        for action, number in steps:
            if action == "submit":
                seqs[number] += 1
                futs.append((number, seqs[number], commit.submit((9, number, seqs[number], 7))))
                for _ in range(2):
                    await asyncio.sleep(0)
            else:
                await answer(number, action == "commit")
            check()
        for _ in range(200):
            if all(f.done() for _s, _q, f in futs):
                break
            await answer(0, True)
            check()
        assert [f.result() for _s, _q, f in futs] == [("DELETED", seq) for _s, seq, _f in futs]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batcher, "RETRY_FIRST_S", 0.0)  # a refused try goes out again at once
        asyncio.run(scenario())
