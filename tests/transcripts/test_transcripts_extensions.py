"""Transcripts of BeanRaft's extensions: beanstalkd 1.12 answers each new command with
UNKNOWN_COMMAND (which is how a client detects a plain beanstalkd), and a BeanRaft node answers
them as docs/reference/extensions.md says, beside plain commands that keep their 1.12 replies.

Method: exact bytes against the real beanstalkd 1.12 and against a single `beanraft serve`
process started by the ``start_server`` fixture.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request

import pytest


@pytest.fixture
def reference(start_server):
    wire = start_server("beanstalkd").connect()
    yield wire
    wire.close()


@pytest.fixture
def node(start_server):
    return start_server("beanraft")


def test_beanstalkd_answers_session_id_with_unknown_command(reference):
    reference.send(b"session-id\r\n")
    reference.expect(b"UNKNOWN_COMMAND\r\n")


def test_beanstalkd_answers_session_resume_with_unknown_command(reference):
    reference.send(b"session-resume Zm9vYmFy-1\r\n")
    reference.expect(b"UNKNOWN_COMMAND\r\n")


def test_beanstalkd_and_a_node_without_an_auth_file_answer_auth_with_unknown_command(
        reference, node):
    wire = node.connect()
    for target in (reference, wire):
        target.send(b"auth someone s3cret-token\r\nauth bad\r\nlist-tube-used\r\n")
        target.expect(b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\nUSING default\r\n")
    wire.close()


def test_beanstalkd_answers_put_key_with_unknown_command_and_reads_its_body_as_a_line(reference):
    # This is why a client sends put-key only after session-id succeeded: beanstalkd would take
    # the body for a command line of its own.
    reference.send(b"put-key k1 0 0 60 5\r\nhello\r\n")
    reference.expect(b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n")
    assert reference.yaml(b"stats")["total-jobs"] == "0"


def test_a_node_answers_session_id_with_an_unguessable_id_that_stays_the_same(node):
    first, second = node.connect(), node.connect()
    ids = []
    for wire in (first, second):
        line = wire.request(b"session-id")
        assert re.fullmatch(rb"SESSION [\x21-\x7e]{16,64}", line), line
        ids.append(line)
        assert wire.request(b"session-id") == line
    assert ids[0] != ids[1]


def test_a_node_dedups_put_key_and_plain_put_is_unchanged(node):
    wire = node.connect()
    wire.send(b"put-key k1 0 0 60 1\r\na\r\nput-key k1 0 0 60 1\r\nb\r\n"
              b"put 0 0 60 1\r\nc\r\nput-key k2 0 0 60 1\r\nd\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    wire.send(b"delete 1\r\nput-key k1 0 0 60 1\r\ne\r\npeek 1\r\n")
    wire.expect(b"DELETED\r\nINSERTED 1\r\nNOT_FOUND\r\n")
    stats = wire.yaml(b"stats")
    assert (stats["total-jobs"], stats["cmd-put"]) == ("3", "5")


def test_a_node_answers_session_resume_of_an_unknown_id_not_found(node):
    wire = node.connect()
    wire.send(b"session-resume nosuchsession\r\nsession-resume a b\r\n")
    wire.expect(b"NOT_FOUND\r\nBAD_FORMAT\r\n")


def test_a_resumed_session_keeps_its_reservations_and_the_old_connection_is_closed(node):
    old, new = node.connect(), node.connect()
    session_id = old.request(b"session-id").split()[1]
    old.send(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nreserve\r\nreserve\r\n")
    old.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nRESERVED 2 1\r\nb\r\n")
    new.send(b"session-resume " + session_id + b"\r\n")
    new.expect(b"RESUMED 12\r\n---\n- 1\n- 2\n\r\n")
    assert old.recv_until_closed() == b""
    new.send(b"session-id\r\ndelete 1\r\nrelease 2 0 0\r\n")
    new.expect(b"SESSION " + session_id + b"\r\nDELETED\r\nRELEASED\r\n")


@pytest.mark.parametrize("behind, job_after", [
    (b"put 0 0 60 1\r\nx\r\nreserve-with-timeout 0\r\nlist-tube-used\r\n", b"ready"),
    (b"put 3 0 60 2\r\nhi\r\nreserve\r\ndelete 1\r\nreserve-with-timeout 1\r\npeek 1\r\n", None),
], ids=["reserves-what-it-put", "waits-again"])
def test_a_session_that_half_closes_while_its_reserve_waits_off_the_log_goes_on_as_1_12(
        node, reference, behind, job_after):
    # A connection with a session id (a beanraft.client) waits in reserve off the log. Half-
    # closed meanwhile, it is answered as 1.12 answers a plain client: TIMED_OUT, then what it
    # sent behind the reserve is run, until the connection closes.
    wire = node.connect()
    session_id = wire.request(b"session-id").split()[1]
    replies = []
    for target in (wire, reference):
        target.send(b"reserve-with-timeout 5\r\n" + behind)
        target.expect_nothing(0.3)
        target.shutdown_write()
        replies.append(target.recv_until_closed(timeout=6))
    assert replies[0].startswith(b"TIMED_OUT\r\nINSERTED 1\r\n") and replies[0] == replies[1]
    other = node.connect()  # the session was closed after it all, its job released
    other.send(b"session-resume " + session_id + b"\r\nstats-job 1\r\n")
    assert other.read_line() == b"NOT_FOUND"
    if job_after is None:
        assert other.read_line() == b"NOT_FOUND"
    else:
        size = int(other.read_line().split()[1])
        assert b"state: " + job_after + b"\n" in other.read_exactly(size + 2)


def test_a_resume_leaves_use_and_watch_as_the_resuming_connection_had_them(node):
    old, new = node.connect(), node.connect()
    session_id = old.request(b"session-id").split()[1]
    old.send(b"use t1\r\nwatch t1\r\n")
    old.expect(b"USING t1\r\nWATCHING 2\r\n")
    new.send(b"session-resume " + session_id + b"\r\nlist-tube-used\r\n")
    new.expect(b"RESUMED 4\r\n---\n\r\nUSING default\r\n")
    assert list(new.yaml(b"list-tubes-watched")) == ["default"]


def test_a_draining_node_refuses_put_key_like_put(node):
    wire = node.connect()
    node.signal(signal.SIGUSR1)
    time.sleep(0.3)
    wire.send(b"put-key k 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\n")
    wire.expect(b"DRAINING\r\nDRAINING\r\n")


def test_past_the_dedup_cap_the_oldest_key_is_forgotten_first(start_server):
    wire = start_server("beanraft", "--dedup-cap", "2").connect()
    wire.send(b"put-key a 0 0 60 1\r\nx\r\nput-key b 0 0 60 1\r\nx\r\nput-key c 0 0 60 1\r\nx\r\n"
              b"put-key c 0 0 60 1\r\nx\r\nput-key b 0 0 60 1\r\nx\r\nput-key a 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 3\r\nINSERTED 2\r\n"
                b"INSERTED 4\r\n")


def test_a_key_is_forgotten_after_the_dedup_window(start_server):
    wire = start_server("beanraft", "--dedup-window", "1").connect()
    wire.send(b"put-key k 0 0 60 1\r\nx\r\nput-key k 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 1\r\n")
    time.sleep(1.2)
    wire.send(b"put-key k 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 2\r\n")


def test_metrics_count_the_remembered_keys(start_server, unused_port):
    wire = start_server("beanraft", "--http", f"127.0.0.1:{unused_port}", "--dedup-cap", "2").connect()
    wire.send(b"put-key a 0 0 60 1\r\nx\r\nput-key b 0 0 60 1\r\nx\r\nput-key c 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    text = ""
    for _attempt in range(20):  # the endpoint caches its figures for a moment
        with urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        if "\nbeanraft_dedup_keys 2.0\n" in text:
            return
        time.sleep(0.2)
    raise AssertionError(f"beanraft_dedup_keys is not 2 in:\n{text}")
