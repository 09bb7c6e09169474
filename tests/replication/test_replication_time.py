"""The leader's time stamps: the entry codec, the re-stamping of pysyncobj commands, the clock.

Method: entries are encoded and re-stamped exactly as a node does it, with pysyncobj's own pickle
module building the commands as its ``@replicated`` wrapper does; the clock is driven by wall and
monotonic clocks the test sets by hand. The end-to-end check, with real processes whose wall
clocks differ, is ``tests/cluster/test_cluster_time.py``.
"""

from __future__ import annotations

import os
import pickle

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj import pickle as pso_pickle

from beanraft.replication.clock import CONTINUITY_NS, SLEW, ClusterClock
from beanraft.replication.codec import EntryFormatError, decode_entry, encode_entry, stamp_entry
from beanraft.replication.raft import restamp_command

REGULAR = b"\x00"
NO_OP = b"\x01"
COMMANDS = [(3, 1 << 32 | 7, 1, "default", 0, 0, 60, b"\x00\xffbody\r\n"), (17, 0, 0)]


def pysyncobj_command(entry: bytes, method_id: int = 0) -> bytes:
    """What pysyncobj appends for ``apply_entry(entry)``: type byte, pickled (id, args)."""
    return REGULAR + pso_pickle.dumps((method_id, (entry,)))


def unwrap(command: bytes) -> tuple[int, bytes]:
    method_id, (entry,) = pso_pickle.loads(command[1:])
    return method_id, entry


# -- the entry codec -----------------------------------------------------------------------

@given(st.integers(min_value=0, max_value=2 ** 62), st.integers(min_value=0, max_value=2 ** 62))
def test_stamping_an_entry_changes_its_time_and_nothing_else(proposed, stamped):
    entry = encode_entry(proposed, COMMANDS)
    assert decode_entry(entry) == (proposed, COMMANDS)
    restamped = stamp_entry(entry, stamped)
    assert len(restamped) == len(entry)
    assert decode_entry(restamped) == (stamped, COMMANDS)


def test_entries_of_the_first_format_still_replay():
    old = b"\x01" + msgpack.packb([123, [list(c) for c in COMMANDS]], use_bin_type=True)
    assert decode_entry(old) == (123, COMMANDS)
    with pytest.raises(EntryFormatError):
        stamp_entry(old, 5)  # only the current format has a fixed place for the stamp


@pytest.mark.parametrize("garbage", [b"", b"\x02", b"\x02" + b"\x00" * 7, b"\x02" + b"\x00" * 8,
                                     b"\x02" + b"\x00" * 8 + b"\xc1", b"\x03" + b"\x00" * 12,
                                     b"\x02" + b"\x00" * 8 + msgpack.packb({"a": 1})])
def test_undecodable_entries_raise_entry_format_error(garbage):
    with pytest.raises(EntryFormatError):
        decode_entry(garbage)


# -- re-stamping a pysyncobj command -------------------------------------------------------

@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2 ** 62))
def test_the_leader_restamps_the_batch_inside_a_pysyncobj_command(body, stamped):
    commands = [(3, 1, 1, "t", 0, 0, 60, body)]
    command = pysyncobj_command(encode_entry(1, commands), method_id=5)
    restamped = restamp_command(command, lambda: stamped)
    assert restamped[:1] == REGULAR
    method_id, entry = unwrap(restamped)
    assert method_id == 5 and decode_entry(entry) == (stamped, commands)


def test_a_large_batch_is_restamped_whole():
    commands = [(3, 1, i, "t", 0, 0, 60, os.urandom(65536)) for i in range(20)]
    restamped = restamp_command(pysyncobj_command(encode_entry(1, commands)), lambda: 99)
    assert decode_entry(unwrap(restamped)[1]) == (99, commands)


def test_pysyncobj_no_op_and_membership_entries_pass_unchanged():
    stamps = []
    for command in (NO_OP, b"\x02" + pso_pickle.dumps(("add", "127.0.0.1:1"))):
        assert restamp_command(command, lambda: stamps.append(1) or 1) is command
    assert stamps == []


class _Boom:
    def __reduce__(self):
        return (os.kill, (os.getpid(), 9))


@pytest.mark.parametrize("payload", [
    (0, (_Boom(),)),                                  # a global inside the arguments
    _Boom(),                                          # a global as the whole call
])
def test_restamping_never_looks_up_a_global_other_than_bytes_decoding(payload):
    command = REGULAR + pickle.dumps(payload, 2)
    with pytest.raises(pickle.UnpicklingError):
        restamp_command(command, lambda: 1)


@pytest.mark.parametrize("call", [(0, ("text",)), (0, (b"a", b"b")), (0, [b"a"]), 7])
def test_a_call_that_is_not_ours_is_refused(call):
    with pytest.raises((ValueError, TypeError)):
        restamp_command(REGULAR + pso_pickle.dumps(call), lambda: 1)


# -- the cluster clock ---------------------------------------------------------------------

class Clocks:
    """A wall clock and a monotonic clock the test moves by hand (ns)."""

    def __init__(self, wall: int, monotonic: int = 10 ** 12):
        self.wall, self.monotonic = wall, monotonic

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.monotonic += ns

    def clock(self) -> ClusterClock:
        return ClusterClock(wall_ns=lambda: self.wall, monotonic_ns=lambda: self.monotonic)


MS = 1_000_000


def test_before_any_entry_the_cluster_time_is_the_wall_clock():
    clocks = Clocks(wall=5_000 * MS)
    assert clocks.clock().now_ns() == 5_000 * MS


@pytest.mark.parametrize("skew_ms", [-900, -300, 0, 400, 900])
def test_a_node_follows_the_leaders_timeline_not_its_own_wall_clock(skew_ms):
    leader_time = 100_000 * MS
    clocks = Clocks(wall=leader_time + skew_ms * MS)
    clock = clocks.clock()
    appended = clocks.monotonic
    clocks.advance(30 * MS)  # the entry is applied 30 ms after it reached this node's log
    clock.observe(leader_time, appended_at_ns=appended)
    assert clock.now_ns() == leader_time + 30 * MS
    clocks.advance(2_000 * MS)  # no entry for two seconds: the monotonic clock carries it on
    assert clock.now_ns() == leader_time + 2_030 * MS
    # As a new leader it goes on from there, moving towards its own clock at SLEW at most:
    # its timers neither come early nor late by more than that.
    followed, most = leader_time + 2_030 * MS, int(2_030 * MS * SLEW)
    assert clock.stamp() == followed + max(-most, min(most, skew_ms * MS))


def test_a_leader_closes_the_gap_to_its_clock_at_slew_and_no_faster():
    clocks = Clocks(wall=100_000 * MS)
    clock = clocks.clock()
    clock.observe(clocks.wall - 100 * MS, appended_at_ns=clocks.monotonic)  # 0.1 s behind
    stamps = []
    for _ in range(4_000):  # an entry every 0.1 s, for 400 s
        clocks.advance(100 * MS)
        stamps.append(clock.stamp())
        clock.observe(stamps[-1], appended_at_ns=clock.stamped_at_ns)
    steps = {b - a for a, b in zip(stamps, stamps[1:])}
    assert max(steps) <= 100 * MS * (1 + SLEW) and min(steps) >= 100 * MS  # never back, never a jump
    assert abs(stamps[-1] - clocks.wall) <= 100 * MS * SLEW  # closed after 200 s, and held there


def test_leader_changes_and_a_slow_journal_leave_the_timeline_where_it_was():
    """Each entry reaches a follower's log (and a leader's journal) a little after its stamp.
    Three nodes, one clock: a leader stamps an entry every 10 ms, its journal write takes 0.2 ms,
    each follower appends it 1 ms after the stamp, and every 5 s another node leads. Over an
    hour of that, the timeline stays within a few ms of the clock; it never jumps (it fell a
    second behind, then jumped, when the leader followed from its journal write or nothing
    closed the followers' delay)."""
    clocks = Clocks(wall=100_000 * MS)
    nodes = [clocks.clock() for _ in range(3)]
    leader, stamps = 0, []
    for tick in range(360_000):
        stamp = nodes[leader].stamp()
        stamped_at = nodes[leader].stamped_at_ns
        clocks.advance(MS // 5)  # the leader's journal write
        for i, node in enumerate(nodes):
            node.observe(stamp, appended_at_ns=stamped_at if i == leader else clocks.monotonic + MS)
        clocks.advance(10 * MS - MS // 5)
        stamps.append(stamp)
        if tick % 500 == 499:
            leader = (leader + 1) % 3
    gaps = [s - w for s, w in zip(stamps, range(100_000 * MS, 10 ** 20, 10 * MS))]
    assert max(abs(g) for g in gaps) < 5 * MS, (min(gaps), max(gaps))


def test_a_timeline_too_far_from_the_wall_clock_gives_way_to_it_and_stamps_never_go_back():
    clocks = Clocks(wall=1_000_000 * MS)
    clock = clocks.clock()
    last = 1_000_000 * MS - 3_600_000 * MS  # the last entry in the journal is an hour old
    clock.observe(last)
    assert clock.now_ns() == clocks.wall  # the whole cluster was down: downtime counts
    assert clock.stamp() == clocks.wall

    clock.observe(clocks.wall + CONTINUITY_NS + 5 * MS)  # a timeline ahead of a slow clock
    assert clock.now_ns() == clocks.wall
    first = clock.stamp(not_before_ns=clocks.wall + CONTINUITY_NS + 5 * MS)
    assert first == clocks.wall + CONTINUITY_NS + 5 * MS  # never earlier than applied time
    assert clock.stamp() == first  # nor earlier than its own last stamp
    clocks.advance(CONTINUITY_NS + 6 * MS)
    assert clock.stamp() > first


def test_stamps_are_non_decreasing_whatever_the_wall_clock_does():
    clocks = Clocks(wall=50_000 * MS)
    clock = clocks.clock()
    stamps = []
    for step in (5, -400, 3, -2_000, 7, 1_500, -1):
        clocks.wall += step * MS  # an NTP step, forwards or back
        clocks.monotonic += abs(step) * MS
        stamps.append(clock.stamp())
        clock.observe(stamps[-1], appended_at_ns=clocks.monotonic)
    assert stamps == sorted(stamps)


@pytest.mark.parametrize("size", [0, 10, 70_000])
def test_a_command_built_in_one_copy_is_the_call_pysyncobj_would_pickle(size):
    from beanraft.replication.codec import encode_entry_parts
    from beanraft.replication.entries import call_command

    parts = encode_entry_parts(7, [(1, b"x" * size)])
    command = call_command(3, parts)
    assert pickle.loads(command[1:]) == (3, (b"".join(parts),))
    restamped = restamp_command(command, lambda: 99)
    assert decode_entry(pickle.loads(restamped[1:])[1][0]) == (99, [(1, b"x" * size)])
