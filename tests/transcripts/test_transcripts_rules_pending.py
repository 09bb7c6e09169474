"""Transcripts where BeanRaft still answers unlike beanstalkd 1.12, because matching 1.12 changes
what the replicated state machine does with commands already in logs: each needs a new rules
version (docs/reference/compatibility.md, "Pending a rules version").

Method: each test expects 1.12's bytes, passes against beanstalkd, and is marked as an expected
failure on BeanRaft's targets, strictly: the rules version that fixes it shows up as an
unexpected pass and the marker must go (as it went for the timers set alike in one packet,
test_transcripts_timers.py, at rules version 3).
"""

import pytest

REFERENCE = "beanstalkd"


def pending(request, server, reason: str) -> None:
    """Marks the test an expected failure on BeanRaft's targets."""
    if server.kind != REFERENCE:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def test_a_half_closed_waiter_runs_the_commands_it_sent_behind_its_reserve(server, request):
    # 1.12 answers the waiting reserve TIMED_OUT and goes on with the commands behind it (the
    # second reserve waits and times out again) before it closes; BeanRaft ends the session at
    # once, so the delete is never run and job 1 goes back to ready.
    pending(request, server, "a wait ends only by an event or the session's close")
    wire = server.connect()
    wire.send(b"put 0 0 60 1\r\nx\r\nreserve\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    wire.send(b"reserve-with-timeout 5\r\ndelete 1\r\nreserve\r\nlist-tube-used\r\n")
    wire.expect_nothing(0.2)
    wire.shutdown_write()
    assert wire.recv_until_closed() == b"TIMED_OUT\r\nDELETED\r\nTIMED_OUT\r\nUSING default\r\n"
    other = server.connect()
    other.send(b"peek 1\r\n")
    other.expect(b"NOT_FOUND\r\n")
