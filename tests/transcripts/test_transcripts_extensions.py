"""Transcripts of BeanRaft's extensions: beanstalkd 1.12 answers each new command with
UNKNOWN_COMMAND (which is how a client detects a plain beanstalkd).

Method: exact bytes against the real beanstalkd 1.12 started by the ``start_server`` fixture.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def reference(start_server):
    wire = start_server("beanstalkd").connect()
    yield wire
    wire.close()


def test_beanstalkd_answers_session_id_with_unknown_command(reference):
    reference.send(b"session-id\r\n")
    reference.expect(b"UNKNOWN_COMMAND\r\n")


def test_beanstalkd_answers_session_resume_with_unknown_command(reference):
    reference.send(b"session-resume Zm9vYmFy-1\r\n")
    reference.expect(b"UNKNOWN_COMMAND\r\n")


def test_beanstalkd_answers_put_key_with_unknown_command_and_reads_its_body_as_a_line(reference):
    # This is why a client sends put-key only after session-id succeeded: beanstalkd would take
    # the body for a command line of its own.
    reference.send(b"put-key k1 0 0 60 5\r\nhello\r\n")
    reference.expect(b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n")
    assert reference.yaml(b"stats")["total-jobs"] == "0"
