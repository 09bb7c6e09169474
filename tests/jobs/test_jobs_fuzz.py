"""No input makes apply_batch raise, and whatever it accepts leaves the machine consistent.

Method: hypothesis feeds batches of arbitrary values — junk, near-miss tuples with real opcodes
and sids but wrong types, and well-typed commands with random arguments — at arbitrary clocks,
then checks that there is one reply per command and that every invariant still holds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beanraft.jobs.commands import Op, check
from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine

S = 1_000_000_000
T0 = 1_700_000_000 * S
SIDS = [(1 << 32) | 1, (1 << 32) | 2, (2 << 32) | 1, 0, 2**64 - 1]

EDGE_INTS = st.sampled_from([-2, -1, 0, 1, 2, 1023, 1024, 2**32 - 1, 2**32, 2**63, 2**64 - 1,
                             2**64, 2**200, S, 4294967295 * S, 4294967296 * S])
ATOMS = st.one_of(st.none(), st.booleans(), st.integers(), EDGE_INTS, st.floats(),
                  st.text(max_size=4), st.binary(max_size=4),
                  st.sampled_from(["default", "a", "-x", "a" * 201, "n1", "", b"default"]))
JUNK = st.recursive(ATOMS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=2), inner, max_size=2)), max_leaves=8)
PLAUSIBLE = st.one_of(EDGE_INTS, st.integers(0, 8), st.sampled_from(["default", "a", "b"]),
                      st.sampled_from(["ready", "delayed", "buried", "reserved", "all"]),
                      st.binary(max_size=3), st.sampled_from([-1, 0, S, 3 * S]))
OPS = st.one_of(st.sampled_from(list(Op)), st.integers(-2, 25), JUNK)


@st.composite
def commands(draw) -> object:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(JUNK)
    op = draw(OPS if shape == 1 else st.sampled_from(list(Op)))
    sid = draw(st.sampled_from(SIDS) if shape > 1 else JUNK)
    seq = draw(st.integers(0, 6) if shape > 2 else JUNK)
    args = draw(st.lists(PLAUSIBLE if shape > 3 else JUNK, max_size=4))
    container = list if shape == 9 else tuple
    return container((op, sid, seq, *args))


CLOCKS = st.one_of(st.integers(T0, T0 + 20 * S), st.integers(0, 2**63), JUNK)
SETUP = [(Op.NODE_START, 0, 0, "n1"), (Op.NODE_START, 0, 0, "n2"),
         (Op.OPEN, SIDS[0], 1), (Op.OPEN, SIDS[1], 1), (Op.OPEN, SIDS[2], 1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(CLOCKS, st.lists(commands(), max_size=8)), max_size=6))
def test_no_batch_of_any_values_makes_apply_raise(batches):
    machine = Machine(max_job_size=4)
    machine.apply_batch(T0, SETUP)
    for now, batch in batches:
        replies, events = machine.apply_batch(now, batch)
        assert len(replies) == len(batch)
        assert all(isinstance(reply, tuple) and isinstance(reply[0], str) for reply in replies)
        assert all(sid in SIDS for sid, _ in events)
        assert problems(machine) == []
    Machine.restore(machine.snapshot())


@given(JUNK)
def test_a_batch_that_is_not_a_list_is_answered_with_nothing(value):
    machine = Machine()
    if not isinstance(value, (list, tuple)):
        assert machine.apply_batch(T0, value) == ([], [])


@given(ATOMS)
def test_queries_never_raise_on_odd_arguments(value):
    machine = Machine()
    machine.apply_batch(T0, SETUP)
    for query in (machine.peek, machine.peek_ready, machine.peek_delayed, machine.peek_buried,
                  machine.list_tube_used, machine.list_tubes_watched, machine.is_waiting,
                  machine.sessions_of):
        query(value)
    machine.stats_job(value, value)
    machine.stats_tube(value, value)
    machine.list_jobs(value, value, value, value, value)
    machine.list_jobs("default", value, 0, 10, T0)
    machine.list_jobs("default", "all", value, value, T0)


PUT_FIELD = st.one_of(EDGE_INTS, st.integers(0, 8), st.booleans(), st.none(), st.floats(),
                      st.binary(max_size=12), st.text(max_size=3))


@settings(max_examples=400)
@given(st.one_of(st.just(int(Op.PUT)), st.just(Op.PUT), st.just(True), EDGE_INTS),
       st.lists(PUT_FIELD, min_size=6, max_size=6), st.booleans(), st.integers(0, 12))
def test_the_quick_check_of_a_put_agrees_with_the_table(op, fields, as_list, max_job_size):
    # check() takes a well-formed put (a tuple) in one expression and everything else through
    # its table, as it does the same command as a list: the verdicts must agree word for word.
    command = [op, *fields] if as_list else (op, *fields)
    assert check(command, max_job_size) == check(list(command), max_job_size)
    good = (int(Op.PUT), SIDS[0], 5, 1024, 0, 60 * S, b"x" * max_job_size)
    assert check(good, max_job_size) is None
    assert check(good[:6] + (b"x" * (max_job_size + 1),), max_job_size) == "JOB_TOO_BIG"


@settings(max_examples=400)
@given(st.integers(1, 6), PUT_FIELD, st.integers(0, 12))
def test_a_put_with_one_field_changed_gets_the_tables_verdict(position, value, max_job_size):
    command = list((int(Op.PUT), SIDS[0], 5, 1024, 0, 60 * S, b"x" * max_job_size))
    command[position] = value
    assert check(tuple(command), max_job_size) == check(command, max_job_size)


# Commands as the log decodes them (tuples of plain ints): the shapes ``check`` takes in one
# expression (a put, one integer argument) with values at and past every bound; the same command
# as a list goes through the table.
INT_OPS = st.one_of(st.sampled_from([int(op) for op in Op]), st.integers(-2, 30))
DECODED = st.one_of(
    st.tuples(INT_OPS, EDGE_INTS, EDGE_INTS, st.one_of(EDGE_INTS, ATOMS)),
    st.tuples(INT_OPS, EDGE_INTS, EDGE_INTS, EDGE_INTS, EDGE_INTS, EDGE_INTS,
              st.one_of(st.binary(max_size=6), ATOMS)),
    commands().filter(lambda command: isinstance(command, (tuple, list))))


@settings(max_examples=2000, deadline=None)
@given(DECODED, st.sampled_from([0, 4, 65535]))
def test_the_one_expression_checks_answer_as_the_table_does(command, max_job_size):
    assert check(command, max_job_size) == check(list(command), max_job_size)
