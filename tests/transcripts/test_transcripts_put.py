"""Transcripts of `put`: bodies, size limits, EXPECTED_CRLF, ids consumed, drain mode (§4.1, §7, T2, T3, T10, T15, T16).

Method: exact bytes against a fresh server; `-z` limits come from the server_args marker and drain
mode from a real SIGUSR1 to the server process.
"""

import signal
import time

import pytest


def test_put_replies_inserted_with_consecutive_ids_from_one(wire):
    wire.send(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nput 0 0 60 1\r\nc\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")


def test_a_body_may_hold_any_bytes_including_nul_and_crlf(wire):
    body = b"\x00\r\n\xff\r\n"
    wire.send(b"put 0 0 1 6\r\n" + body + b"\r\n")
    wire.expect(b"INSERTED 1\r\n")
    wire.send(b"peek 1\r\n")
    wire.expect(b"FOUND 1 6\r\n" + body + b"\r\n")
    every_byte = bytes(range(256))
    wire.send(b"put 0 0 1 256\r\n" + every_byte + b"\r\npeek 2\r\n")
    wire.expect(b"INSERTED 2\r\nFOUND 2 256\r\n" + every_byte + b"\r\n")


def test_an_empty_body_is_a_job(wire):
    wire.send(b"put 0 0 1 0\r\n\r\n")
    wire.expect(b"INSERTED 1\r\n")
    wire.send(b"reserve-with-timeout 0\r\n")
    wire.expect(b"RESERVED 1 0\r\n\r\n")
    wire.send(b"delete 1\r\n")
    wire.expect(b"DELETED\r\n")


def test_the_default_maximum_job_size_is_65535_bytes(wire):
    wire.send(b"put 0 0 1 65535\r\n" + b"x" * 65535 + b"\r\n")
    wire.expect(b"INSERTED 1\r\n")
    wire.send(b"put 0 0 1 65536\r\n" + b"x" * 65536 + b"\r\n")
    wire.expect(b"JOB_TOO_BIG\r\n")
    wire.send(b"put 0 0 1 0\r\n\r\n")
    wire.expect(b"INSERTED 2\r\n")


@pytest.mark.server_args("-z", "10")
def test_a_job_of_the_maximum_size_is_accepted_and_one_byte_more_is_drained_as_too_big(wire):
    wire.send(b"put 0 0 1 10\r\n0123456789\r\n")
    wire.expect(b"INSERTED 1\r\n")
    wire.send(b"put 0 0 1 11\r\n01234567890\r\nput 0 0 1 1\r\nx\r\n")
    wire.expect(b"JOB_TOO_BIG\r\nINSERTED 2\r\n")


@pytest.mark.server_args("-z", "10")
def test_job_too_big_is_checked_before_trailing_garbage_and_drains_the_body(wire):
    wire.send(b"put 0 0 1 11 junk\r\n01234567890\r\n")
    wire.expect(b"JOB_TOO_BIG\r\n")
    wire.send(b"put 0 0 1 1 junk\r\nA\r\n")
    wire.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")
    wire.send(b"put 0 0 1 1 \r\nA\r\n")
    wire.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")


@pytest.mark.server_args("-z", "10")
def test_a_too_big_body_that_looks_like_a_command_is_drained_not_run(wire):
    wire.send(b"put 0 0 0 11\r\ndelete 9999\r\n")  # 13 bytes = 11 + CRLF
    wire.expect(b"JOB_TOO_BIG\r\n")
    wire.send(b"put 0 0 0 1\r\nA\r\n")
    wire.expect(b"INSERTED 1\r\n")


@pytest.mark.server_args("-z", "10")
def test_a_too_big_body_is_drained_even_when_it_arrives_slowly(wire):
    wire.send(b"put 0 0 1 20\r\n0123456789")
    wire.expect_nothing(0.2)
    wire.send(b"0123456789\r\nlist-tube-used\r\n")
    wire.expect(b"JOB_TOO_BIG\r\nUSING default\r\n")


def test_a_body_without_its_crlf_is_expected_crlf_and_consumes_an_id(wire):
    wire.send(b"put 0 0 1 1\r\nA\r\nput 0 0 1 1\r\nB\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    wire.send(b"put 0 0 1 3\r\nabcd\r\n")
    wire.expect(b"EXPECTED_CRLF\r\n")  # id 3 is gone
    # The leftover "\n" prefixes the next line, which is then not a command.
    wire.send(b"put 0 0 1 3\r\nabc\r\n")
    wire.expect(b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n")
    wire.send(b"put 0 0 1 3\r\nab\n\r\n")
    wire.expect(b"INSERTED 4\r\n")
    wire.send(b"peek 3\r\n")
    wire.expect(b"NOT_FOUND\r\n")


def test_a_body_ending_in_other_bytes_is_expected_crlf_and_the_rest_is_a_new_line(wire):
    wire.send(b"put 0 0 1 1\r\nAXY\r\n")  # reads "AXY", leaves "\r\n" = an empty line
    wire.expect(b"EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n")
    wire.send(b"put 0 0 1 1\r\nB\r\n")
    wire.expect(b"INSERTED 2\r\n")


def test_a_put_whose_connection_closes_mid_body_consumes_its_id(server):
    aborted = server.connect()
    aborted.send(b"put 0 0 5 10\r\nabc")
    time.sleep(0.2)  # let the server read the header (and allocate the id) before the close
    aborted.close()
    time.sleep(0.3)
    wire = server.connect()
    wire.send(b"put 0 0 5 1\r\nx\r\n")
    wire.expect(b"INSERTED 2\r\n")
    wire.send(b"peek 1\r\n")
    wire.expect(b"NOT_FOUND\r\n")


def test_a_job_gets_its_id_when_its_header_arrives_in_beanstalkd_and_with_its_body_in_beanraft(server):
    # A documented difference (compatibility.md, put): 1.12 makes the job when the header is
    # read, so the slow producer's job is 1; BeanRaft's log takes a put once its body is in.
    slow, quick = server.connect(), server.connect()
    slow.send(b"put 0 0 60 1\r\n")
    slow.expect_nothing(0.2)  # the header is read (and, in 1.12, the job made)
    quick.send(b"put 0 0 60 1\r\nq\r\n")
    quick.expect(b"INSERTED 2\r\n" if server.kind == "beanstalkd" else b"INSERTED 1\r\n")
    slow.send(b"s\r\n")
    slow.expect(b"INSERTED 1\r\n" if server.kind == "beanstalkd" else b"INSERTED 2\r\n")


def test_ttr_zero_becomes_one_second(wire):
    wire.send(b"put 0 0 0 5\r\nhello\r\n")
    wire.expect(b"INSERTED 1\r\n")
    assert wire.yaml(b"stats-job 1")["ttr"] == "1"


@pytest.mark.parametrize("ttr", [1, 120, 4294, 4295, 4296, 4297, 5000, 21600, 4294967295])
def test_a_large_ttr_is_reported_back_exactly(wire, ttr):
    wire.send(b"put 0 0 %d 1\r\nx\r\n" % ttr)
    wire.expect(b"INSERTED 1\r\n")
    assert wire.yaml(b"stats-job 1")["ttr"] == str(ttr)


def test_a_put_with_a_delay_makes_a_delayed_job_and_zero_delay_a_ready_one(wire):
    wire.send(b"put 0 1 1 0\r\n\r\nput 0 0 1 0\r\n\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    assert wire.yaml(b"stats-job 1")["state"] == "delayed"
    assert wire.yaml(b"stats-job 2")["state"] == "ready"


def test_a_put_goes_into_the_used_tube(wire):
    wire.send(b"use jobs\r\nput 0 0 60 1\r\nj\r\n")
    wire.expect(b"USING jobs\r\nINSERTED 1\r\n")
    assert wire.yaml(b"stats-job 1")["tube"] == "jobs"
    tube = wire.yaml(b"stats-tube jobs")
    assert (tube["current-jobs-ready"], tube["total-jobs"]) == ("1", "1")
    assert wire.yaml(b"stats-tube default")["total-jobs"] == "0"


def test_urgent_means_a_priority_below_1024(wire):
    wire.send(b"put 1023 0 60 1\r\na\r\nput 1024 0 60 1\r\nb\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\n")
    tube = wire.yaml(b"stats-tube default")
    assert (tube["current-jobs-urgent"], tube["current-jobs-ready"]) == ("1", "2")
    assert wire.yaml(b"stats")["current-jobs-urgent"] == "1"


def test_a_put_wakes_a_reserve_waiting_on_another_connection(server):
    worker, producer = server.connect(), server.connect()
    worker.send(b"reserve\r\n")
    worker.expect_nothing(0.2)
    producer.send(b"put 5 0 60 3\r\nhey\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.expect(b"RESERVED 1 3\r\nhey\r\n")


# --------------------------------------------------------------------------- counters, drain


def wait_until_draining(wire, timeout_s=3.0):
    """Signals are asynchronous: poll `stats` until the server reports drain mode."""
    deadline = time.monotonic() + timeout_s
    while wire.yaml(b"stats")["draining"] != "true":
        assert time.monotonic() < deadline, "server never entered drain mode"
        time.sleep(0.02)


@pytest.mark.server_args("-z", "5")
def test_rejected_puts_count_as_commands_but_not_as_jobs(wire):
    wire.send(b"put 0 0 1 6\r\n123456\r\n")
    wire.expect(b"JOB_TOO_BIG\r\n")
    wire.send(b"put 0 0 1 1 junk\r\nA\r\n")
    wire.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")
    wire.send(b"put 0 0 1 1\r\nAB\r\n")  # reads "AB\r"; the "\n" left over starts the next line
    wire.expect(b"EXPECTED_CRLF\r\n")
    wire.send(b"\r\n")
    wire.expect(b"UNKNOWN_COMMAND\r\n")
    stats = wire.yaml(b"stats")
    assert (stats["cmd-put"], stats["total-jobs"], stats["current-producers"]) == ("3", "0", "1")
    wire.send(b"put 0 0 1 1\r\nA\r\n")
    wire.expect(b"INSERTED 2\r\n")


def test_a_put_in_drain_mode_reads_its_body_and_replies_draining(server, wire):
    wire.send(b"put 0 0 1 1\r\nA\r\n")
    wire.expect(b"INSERTED 1\r\n")
    assert wire.yaml(b"stats")["draining"] == "false"
    server.signal(signal.SIGUSR1)
    wait_until_draining(wire)
    wire.send(b"put 0 0 1 1\r\nB\r\nput 0 0 1 1\r\nC\r\nlist-tube-used\r\n")
    wire.expect(b"DRAINING\r\nDRAINING\r\nUSING default\r\n")
    # Everything else keeps working, so workers can drain the queue.
    wire.send(b"reserve-with-timeout 0\r\n")
    wire.expect(b"RESERVED 1 1\r\nA\r\n")
    wire.send(b"delete 1\r\n")
    wire.expect(b"DELETED\r\n")
    stats = wire.yaml(b"stats")
    assert (stats["draining"], stats["total-jobs"], stats["cmd-put"]) == ("true", "1", "3")


@pytest.mark.server_args("-z", "5")
def test_drain_mode_still_checks_the_size_first(server, wire):
    server.signal(signal.SIGUSR1)
    wait_until_draining(wire)
    wire.send(b"put 0 0 1 6\r\n123456\r\nput 0 0 1 1 x\r\n")
    wire.expect(b"JOB_TOO_BIG\r\nBAD_FORMAT\r\n")
    wire.send(b"put 0 0 1 1\r\nA\r\n")
    wire.expect(b"DRAINING\r\n")


@pytest.mark.server_args("-z", "2000000000")
def test_a_maximum_job_size_above_one_gibibyte_is_clamped(wire):
    assert wire.yaml(b"stats")["max-job-size"] == "1073741824"


@pytest.mark.server_args("-z", "0")
def test_with_a_maximum_job_size_of_zero_only_empty_jobs_fit(wire):
    wire.send(b"put 0 0 1 0\r\n\r\nput 0 0 1 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\nJOB_TOO_BIG\r\n")
