"""Goal: the sans-I/O core replays exactly what is safe after a failover, hands a job whose
RESERVED reply was lost to the next reserve, and gives up within failover_timeout.

Method: the core is driven by hand, with virtual time and the server's bytes written out as a
transcript (no socket, no clock): connect, feed replies, lose the connection, connect again,
and compare the bytes the core sends with the exact commands expected.
"""

from __future__ import annotations

import random

import pytest

from beanraft import protocol as p
from beanraft.client import api, ops, wire
from beanraft.client.core import DOWN, READY, Core
from beanraft.client.errors import NotFoundError, UnavailableError, UnknownResponseError

A, B = ("10.0.0.1", 11300), ("10.0.0.2", 11300)


def make_job(reply):
    return api.Job(reply.job_id, reply.body)


def up(core: Core, address=A, now=0.0) -> bytes:
    core.connected(address, now)
    return core.data_to_send()


def session_core(seed: int = 1) -> Core:
    """A core READY on A with session s1 (the server has the extensions)."""
    core = Core([A, B], timeout_s=2.0, failover_timeout_s=10.0, rng=random.Random(seed))
    core.start(0.0)
    core.addresses = [A, B]
    assert core.next_attempt(0.0) is not None
    assert up(core, A) == b"session-id\r\n"
    core.receive_data(b"SESSION s1\r\n", 0.1)
    assert core.state == READY
    return core


def fail_over(core: Core, resumed: bytes, now=1.0) -> bytes:
    """Lose A, connect to B, answer the resume; returns what the core sent after it."""
    core.connection_lost("connection closed by the node", now)
    assert core.state == DOWN
    assert core.next_attempt(now) is not None
    assert up(core, B, now) == b"session-resume s1\r\n"
    core.receive_data(resumed, now + 0.1)
    return core.data_to_send()


def resumed(*job_ids: int) -> bytes:
    body = "---\n" + "".join(f"- {j}\n" for j in job_ids)
    return f"RESUMED {len(body)}\r\n{body}\r\n".encode()


def test_a_put_whose_reply_was_lost_is_sent_again_with_the_same_key():
    core = session_core()
    put = ops.put(b"hi", 1, 0, 60, key="k-1")
    core.submit(put, 0.2)
    assert core.data_to_send() == b"put-key k-1 1 0 60 2\r\nhi\r\n"
    assert fail_over(core, resumed()) == b"put-key k-1 1 0 60 2\r\nhi\r\n"
    core.receive_data(b"INSERTED 7\r\n", 1.2)
    assert put.outcome() == 7


def test_every_put_gets_a_fresh_key_unless_the_application_gives_one():
    assert ops.put(b"a", 0, 0, 1, None).key != ops.put(b"a", 0, 0, 1, None).key


def test_a_lost_delete_of_a_job_the_resumed_session_no_longer_holds_is_done():
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\n"  # a slice
    core.receive_data(b"RESERVED 5 1\r\nx\r\n", 0.3)
    delete, release = ops.delete(5), ops.release(6, 1, 0)
    core.held.add(6)
    core.submit(delete, 0.4)
    core.submit(release, 0.4)
    core.data_to_send()
    # 5 is gone from the session (our delete committed), 6 is still held: only 6 is re-sent.
    assert fail_over(core, resumed(6)) == b"release 6 1 0\r\n"
    assert delete.done and delete.error is None
    core.receive_data(b"RELEASED\r\n", 1.3)
    assert release.outcome() is None and not core.held


def test_a_job_reserved_to_the_session_but_unknown_to_the_client_goes_to_the_next_reserve():
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    core.data_to_send()
    # The RESERVED 9 reply was lost with the node: the resumed session says it holds 9.
    assert fail_over(core, resumed(9)) == b"peek 9\r\n"
    core.receive_data(b"FOUND 9 4\r\nbody\r\n", 1.3)
    job = reserve.outcome()
    assert (job.id, job.body) == (9, b"body") and list(core.held) == [9]


def test_an_orphan_that_vanished_meanwhile_falls_back_to_a_real_reserve():
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    core.data_to_send()
    assert fail_over(core, resumed(9)) == b"peek 9\r\n"
    core.receive_data(b"NOT_FOUND\r\n", 1.3)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\n"


def test_a_reserve_is_sliced_and_issued_again_with_the_time_left():
    core = session_core()
    reserve = ops.reserve(3, 0.0, make_job)
    core.submit(reserve, 0.2)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\n"
    core.receive_data(b"TIMED_OUT\r\n", 1.2)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\n"
    assert fail_over(core, resumed(), now=2.5) == b"reserve-with-timeout 1\r\n"
    core.receive_data(b"TIMED_OUT\r\n", 3.1)
    assert isinstance(reserve.error, ops.error_for(p.TimedOut()).__class__)


def test_a_frozen_node_is_declared_lost_after_the_slice_plus_the_timeout():
    core = session_core()
    core.submit(ops.reserve(None, 0.2, make_job), 0.2)
    core.data_to_send()
    assert core.next_deadline() == pytest.approx(0.2 + 1 + 2.0)
    core.tick(3.1)
    assert core.state == READY
    core.tick(3.3)
    assert core.state == DOWN


def test_tubes_are_restored_before_anything_is_replayed():
    core = session_core()
    for op, reply in ((ops.use("u"), b"USING u\r\n"), (ops.watch("w"), b"WATCHING 2\r\n"),
                      (ops.ignore("default"), b"WATCHING 1\r\n")):
        core.submit(op, 0.3)
        core.receive_data(reply, 0.3)
    core.data_to_send()
    core.connection_lost("reset", 1.0)
    core.next_attempt(1.0)
    assert up(core, B, 1.0) == b"session-resume s1\r\nuse u\r\nwatch w\r\nignore default\r\n"


def test_an_expired_session_is_replaced_and_a_lost_delete_then_reports_not_found():
    core = session_core()
    core.held.add(5)
    delete = ops.delete(5)
    core.submit(delete, 0.2)
    core.data_to_send()
    core.connection_lost("reset", 1.0)
    core.next_attempt(1.0)
    up(core, B, 1.0)
    core.receive_data(b"NOT_FOUND\r\n", 1.1)
    assert core.data_to_send() == b"session-id\r\n"
    core.receive_data(b"SESSION s2\r\n", 1.2)
    assert core.data_to_send() == b"delete 5\r\n"
    core.receive_data(b"NOT_FOUND\r\n", 1.3)
    assert isinstance(delete.error, NotFoundError)


def test_without_the_extensions_a_lost_put_fails_as_unknown_and_is_not_sent_twice():
    core = Core([A], timeout_s=2.0, failover_timeout_s=10.0, rng=random.Random(1))
    core.start(0.0)
    core.next_attempt(0.0)
    up(core)
    core.receive_data(b"UNKNOWN_COMMAND\r\n", 0.1)
    put, stats = ops.put(b"x", 0, 0, 1, None), ops.stats("stats", p.Stats())
    core.submit(put, 0.2)
    core.submit(stats, 0.2)
    assert core.data_to_send() == b"put 0 0 1 1\r\nx\r\nstats\r\n"
    core.connection_lost("reset", 1.0)
    core.next_attempt(1.0)
    assert up(core, A, 1.0) == b"stats\r\n"  # no session commands to plain beanstalkd
    assert isinstance(put.error, UnavailableError) and "outcome is unknown" in str(put.error)


def test_the_failover_gives_up_after_failover_timeout_naming_every_address():
    core = Core([A, B], timeout_s=2.0, failover_timeout_s=5.0, rng=random.Random(3))
    core.start(0.0)
    op = ops.stats("stats", p.Stats())
    core.submit(op, 0.0)
    now, tried = 0.0, []
    while (attempt := core.next_attempt(now)) is not None:
        address, delay = attempt
        tried.append(address)
        now += delay + 0.5
        core.attempt_failed(address, "connection refused")
    assert now <= 5.0 + 1.0
    assert set(tried) == {A, B} and len(tried) >= 4
    assert isinstance(op.error, UnavailableError)
    assert "10.0.0.1:11300: connection refused" in str(op.error)
    assert "10.0.0.2:11300: connection refused" in str(op.error)


def test_the_node_that_failed_least_is_tried_first():
    for seed in range(20):  # whatever the random order
        core = session_core(seed)
        core.connection_lost("no reply within 2 s", 1.0)
        assert core.next_attempt(1.0)[0] == B


def test_a_lost_purge_or_move_buried_is_never_sent_again_but_a_move_job_or_list_is():
    core = session_core()
    purge, move_all = ops.purge_tube("t", "all"), ops.move_buried("t", "dead")
    move_one, page = ops.move_job(5, "dead"), ops.list_jobs("t", "buried", 0, 10)
    for op in (purge, move_all, move_one, page):
        core.submit(op, 0.2)
    assert core.data_to_send() == (b"purge-tube t all\r\nmove-buried t dead\r\nmove-job 5 dead\r\n"
                                   b"list-jobs t buried 0 10\r\n")
    assert fail_over(core, resumed()) == b"move-job 5 dead\r\nlist-jobs t buried 0 10\r\n"
    for op in (purge, move_all):
        with pytest.raises(UnavailableError, match="outcome is unknown"):
            op.outcome()
    core.receive_data(b"MOVED 0\r\nOK 4\r\n---\n\r\n", 1.2)
    assert (move_one.outcome(), page.outcome()) == (False, [])


@pytest.mark.parametrize("op, request_", [
    (ops.put(b"x\r\ny", 4294967295, 7, 9, None), p.Put(4294967295, 7, 9, b"x\r\ny")),
    (ops.put(b"", 0, 0, 0, "k"), p.Put(0, 0, 0, b"")),
    (ops.delete(18446744073709551615), p.Delete(18446744073709551615)),
    (ops.release(api.Job(3, b""), 1, 2), p.Release(3, 1, 2)),
    (ops.bury(5, 0), p.Bury(5, 0)),
    (ops.touch(api.Job(6, b"")), p.Touch(6)),
])
def test_the_commands_encoded_when_built_are_the_protocols_bytes(op, request_):
    assert op.request == p.encode_request(request_)
    if op.kind == "put":
        keyed = p.PutKey(op.key, request_.pri, request_.delay_s, request_.ttr_s, request_.body)
        assert wire.put_key(op.key, op.request) == p.encode_request(keyed)


def test_a_reserve_cancelled_after_it_was_sent_gives_its_job_back_with_its_priority():
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\n"
    core.cancel(reserve)
    core.receive_data(b"RESERVED 5 1\r\nx\r\n", 0.3)
    assert core.data_to_send() == b"stats-job 5\r\n"
    stats = b"---\nid: 5\ntube: default\nstate: reserved\npri: 7\n"
    core.receive_data(b"OK %d\r\n%s\r\n" % (len(stats), stats), 0.4)
    assert core.data_to_send() == b"release 5 7 0\r\n"
    assert not reserve.done
    core.receive_data(b"RELEASED\r\n", 0.5)
    assert reserve.done and core.idle and not core.held


def test_a_cancelled_reserve_is_not_issued_again_when_its_slice_ends():
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    core.data_to_send()
    core.cancel(reserve)
    core.receive_data(b"TIMED_OUT\r\n", 1.2)
    assert core.data_to_send() == b"" and reserve.done and core.idle


def test_a_command_cancelled_while_queued_is_never_sent_and_a_sent_one_is_not_replayed():
    core = session_core()
    sent_put = ops.put(b"a", 1, 0, 60, key="k-a")
    core.submit(sent_put, 0.2)
    core.data_to_send()
    core.connection_lost("reset", 1.0)
    queued_put = ops.put(b"b", 1, 0, 60, key="k-b")
    core.submit(queued_put, 1.0)
    core.cancel(sent_put)  # sent on the lost connection, queued for its replay
    core.cancel(queued_put)
    assert sent_put.done and queued_put.done
    core.next_attempt(1.0)
    assert up(core, B, 1.0) == b"session-resume s1\r\n"
    core.receive_data(resumed(), 1.1)
    assert core.data_to_send() == b"" and core.idle


def test_a_handshake_answered_in_part_does_not_end_the_failover():
    core = Core([A], timeout_s=2.0, failover_timeout_s=5.0, rng=random.Random(1),
                auth=("alice", "secret"))
    core.start(0.0)
    stats = ops.stats("stats", p.Stats())
    core.submit(stats, 0.0)
    now = 0.0
    for _ in range(100):  # bounded: a budget that never runs out must fail the test
        if (attempt := core.next_attempt(now)) is None:
            break
        now += attempt[1]
        assert up(core, A, now) == b"auth alice secret\r\nsession-id\r\n"
        core.receive_data(b"AUTHENTICATED\r\n", now + 0.01)  # no commit needed
        assert core.state != READY
        now += 0.5
        core.connection_lost("connection closed by the node", now)  # the commit timed out
    assert now <= 5.0 + 1.0
    assert isinstance(stats.error, UnavailableError)


def test_auth_required_is_named_and_fails_over_within_the_budget():
    core = Core([A], timeout_s=2.0, failover_timeout_s=5.0, rng=random.Random(1))
    core.start(0.0)
    now = 0.0
    for _ in range(100):  # bounded: a budget that never runs out must fail the test
        if (attempt := core.next_attempt(now)) is None:
            break
        now += attempt[1]
        up(core, A, now)
        core.receive_data(b"AUTH_REQUIRED\r\n", now + 0.01)
        assert core.state == DOWN
        now += 0.01
    assert now <= 5.0 + 1.0
    assert "requires authentication (AUTH_REQUIRED)" in str(core.last_error)


def test_a_cancelled_reserve_served_from_the_resumed_session_gives_that_job_back():
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    core.data_to_send()
    assert fail_over(core, resumed(9)) == b"peek 9\r\n"
    core.cancel(reserve)
    core.receive_data(b"FOUND 9 4\r\nbody\r\n", 1.3)
    assert core.data_to_send() == b"stats-job 9\r\n"
    core.receive_data(b"OK 13\r\n---\npri: 100\n\r\n", 1.4)
    assert core.data_to_send() == b"release 9 100 0\r\n"
    core.receive_data(b"RELEASED\r\n", 1.5)
    assert reserve.done and core.idle and not core.held


def lost_reserve_job(job_id: int = 5) -> tuple[Core, ops.Op]:
    """A core whose reserve-job reached a node that then died before its RESERVED reply."""
    core = session_core()
    reserve_job = ops.reserve_job(job_id, make_job)
    core.submit(reserve_job, 0.2)
    assert core.data_to_send() == b"reserve-job %d\r\n" % job_id
    return core, reserve_job


def test_a_lost_reserve_job_is_fetched_from_the_resumed_session_that_holds_its_job():
    core, reserve_job = lost_reserve_job()
    assert fail_over(core, resumed(5)) == b"peek 5\r\n"
    core.receive_data(b"FOUND 5 4\r\nfive\r\n", 1.2)
    job = reserve_job.outcome()
    assert (job.id, job.body) == (5, b"five") and list(core.held) == [5]


def test_a_reserve_job_lost_twice_in_a_row_returns_its_own_job_and_never_another():
    # The reviewer's sequence: the peek of the resumed job is lost too. The third node must
    # be asked for job 5 again, not for any ready job (which returned job 9 for job 5 and
    # left 5 reserved to the session, unknown to the application).
    core, reserve_job = lost_reserve_job()
    assert fail_over(core, resumed(5), now=1.0) == b"peek 5\r\n"
    assert fail_over(core, resumed(5), now=2.0) == b"peek 5\r\n"
    assert list(core.orphans) == []
    core.receive_data(b"FOUND 5 4\r\nfive\r\n", 2.2)
    assert reserve_job.outcome().id == 5 and list(core.held) == [5]


def test_a_reserve_job_lost_twice_whose_job_the_session_lost_meanwhile_asks_for_it_again():
    # After the second failover the session no longer holds job 5 (its TTR ran out): the
    # client sends reserve-job 5 again, and NOT_FOUND is the documented NotFoundError.
    core, reserve_job = lost_reserve_job()
    assert fail_over(core, resumed(5), now=1.0) == b"peek 5\r\n"
    assert fail_over(core, resumed(), now=2.0) == b"reserve-job 5\r\n"
    core.receive_data(b"NOT_FOUND\r\n", 2.2)
    assert isinstance(reserve_job.error, NotFoundError)
    assert core.idle and core.next_deadline() is None


def test_a_reserve_job_lost_twice_then_on_an_expired_session_is_sent_again_as_reserve_job():
    core, reserve_job = lost_reserve_job()
    assert fail_over(core, resumed(5), now=1.0) == b"peek 5\r\n"
    core.connection_lost("reset", 2.0)
    core.next_attempt(2.0)
    assert up(core, A, 2.0) == b"session-resume s1\r\n"
    core.receive_data(b"NOT_FOUND\r\n", 2.1)  # the session expired: its jobs were released
    assert core.data_to_send() == b"session-id\r\n"
    core.receive_data(b"SESSION s2\r\n", 2.2)
    assert core.data_to_send() == b"reserve-job 5\r\n"
    core.receive_data(b"RESERVED 5 4\r\nfive\r\n", 2.3)
    assert reserve_job.outcome().id == 5 and list(core.held) == [5]


def test_a_reserve_job_whose_job_vanished_before_the_peek_gets_the_servers_answer():
    core, reserve_job = lost_reserve_job()
    assert fail_over(core, resumed(5), now=1.0) == b"peek 5\r\n"
    core.receive_data(b"NOT_FOUND\r\n", 1.2)
    assert core.data_to_send() == b"reserve-job 5\r\n"
    core.receive_data(b"NOT_FOUND\r\n", 1.3)
    assert isinstance(reserve_job.error, NotFoundError)


def test_a_reserve_job_queued_during_a_failover_gets_its_job_held_by_the_session():
    # A reserve lost its RESERVED 5; the application asked for job 5 by id meanwhile. The
    # resume leaves 5 to the reserve_job (not to the reserve), which fetches it with peek:
    # reserve-job 5 would be NOT_FOUND (reserved), and 5 would stay hidden until its TTR.
    core = session_core()
    reserve = ops.reserve(None, 0.2, make_job)
    core.submit(reserve, 0.2)
    core.data_to_send()
    core.connection_lost("reset", 1.0)
    reserve_job = ops.reserve_job(5, make_job)
    core.submit(reserve_job, 1.0)
    core.next_attempt(1.0)
    up(core, B, 1.0)
    core.receive_data(resumed(5), 1.1)
    assert core.data_to_send() == b"reserve-with-timeout 1\r\npeek 5\r\n"
    core.receive_data(b"TIMED_OUT\r\nFOUND 5 4\r\nfive\r\n", 1.2)
    assert reserve_job.outcome().id == 5 and not reserve.done


@pytest.mark.parametrize("make_op, held, first, second, reply, result", [
    # Each replay rule, lost on two connections in a row: the second failover applies the same
    # rule as the first (no rule is changed by a failover).
    (lambda: ops.put(b"hi", 1, 0, 60, key="k-1"), (), b"put-key k-1 1 0 60 2\r\nhi\r\n",
     b"put-key k-1 1 0 60 2\r\nhi\r\n", b"INSERTED 7\r\n", 7),
    (lambda: ops.reserve(None, 0.2, make_job), (9,), b"peek 9\r\n", b"peek 9\r\n",
     b"FOUND 9 1\r\nx\r\n", 9),
    (lambda: ops.reserve_job(5, make_job), (5,), b"peek 5\r\n", b"peek 5\r\n",
     b"FOUND 5 1\r\nx\r\n", 5),
    (lambda: ops.delete(5), (5,), b"delete 5\r\n", b"delete 5\r\n", b"DELETED\r\n", None),
    (lambda: ops.peek("peek", p.Peek(5), make_job), (), b"peek 5\r\n", b"peek 5\r\n",
     b"FOUND 5 1\r\nx\r\n", 5),
], ids=["put", "reserve", "reserve_job", "delete", "always"])
def test_every_replay_rule_holds_for_an_op_lost_twice_in_a_row(make_op, held, first, second,
                                                                reply, result):
    core = session_core()
    op = make_op()
    for job in held if op.kind == "delete" else ():
        core.held.add(job)
    core.submit(op, 0.2)
    core.data_to_send()
    assert fail_over(core, resumed(*held), now=1.0) == first
    assert fail_over(core, resumed(*held), now=2.0) == second
    core.receive_data(reply, 2.2)
    outcome = op.outcome()
    assert (outcome if result is None or isinstance(outcome, int) else outcome.id) == result


def test_of_two_lost_reserve_jobs_for_one_job_only_the_first_gets_it():
    core = session_core()
    first, second = ops.reserve_job(5, make_job), ops.reserve_job(5, make_job)
    core.submit(first, 0.2)
    core.submit(second, 0.2)
    core.data_to_send()
    assert fail_over(core, resumed(5)) == b"peek 5\r\nreserve-job 5\r\n"
    core.receive_data(b"FOUND 5 4\r\nfive\r\nNOT_FOUND\r\n", 1.2)
    assert first.outcome().id == 5 and isinstance(second.error, NotFoundError)


@pytest.mark.parametrize("body", [b"hello", b"---\nkey: \xff\n", b"---\ntop: 1\n"],
                         ids=["not-yaml", "not-utf8", "records-without-a-dash"])
def test_a_malformed_yaml_body_is_an_unknown_response_not_an_assertion(body):
    for parse in (ops.parse_yaml_list, ops.parse_yaml_mapping, ops.parse_yaml_records):
        if body.startswith(b"---\ntop") and parse is not ops.parse_yaml_records:
            continue  # a flat mapping or a list without items: well-formed for those two
        with pytest.raises(UnknownResponseError):
            parse(body)


def test_digits_that_int_refuses_stay_text():
    assert ops.parse_yaml_mapping(b"---\nwide: \xc2\xb2\nid: 7\n") == {"wide": "\u00b2", "id": 7}


@pytest.mark.parametrize("address", ["node:\u00b2", "node:" + "9" * 5000, "node:x"])
def test_an_address_whose_port_is_not_one_is_a_value_error(address):
    from beanraft.client.addresses import parse_addresses

    with pytest.raises(ValueError, match="not a port"):
        parse_addresses(address)
