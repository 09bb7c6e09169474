"""Transcripts over a UNIX socket (`-l unix:/path`): the protocol is the same as over TCP, and a
stale socket file left by an earlier process is replaced (§1, §8, testserv peek_ok_unix, unix_auto_removal).

Method: the `unix_server` fixture starts each target listening on a socket in a fresh /tmp directory.
"""

import os
import stat
import time


def test_the_socket_file_exists_while_the_server_runs(unix_server):
    assert stat.S_ISSOCK(os.stat(unix_server.address).st_mode)


def test_put_peek_reserve_and_delete_work_over_a_unix_socket(unix_server):
    wire = unix_server.connect()
    wire.send(b"put 0 0 60 1\r\na\r\npeek 1\r\nreserve\r\ndelete 1\r\npeek 1\r\n")
    wire.expect(b"INSERTED 1\r\nFOUND 1 1\r\na\r\nRESERVED 1 1\r\na\r\nDELETED\r\nNOT_FOUND\r\n")


def test_a_waiting_reserve_is_woken_by_a_put_from_another_unix_connection(unix_server):
    worker, producer = unix_server.connect(), unix_server.connect()
    worker.send(b"reserve\r\n")
    worker.expect_nothing(0.2)
    producer.send(b"put 0 0 60 2\r\nhi\r\n")
    producer.expect(b"INSERTED 1\r\n")
    worker.expect(b"RESERVED 1 2\r\nhi\r\n")


def test_half_closing_a_waiting_reserve_over_a_unix_socket_times_it_out(unix_server):
    worker = unix_server.connect()
    worker.send(b"reserve\r\n")
    worker.expect_nothing(0.2)
    worker.shutdown_write()
    assert worker.recv_until_closed() == b"TIMED_OUT\r\n"


def test_a_restart_on_the_same_path_replaces_the_stale_socket_file(unix_server):
    unix_server.kill()  # SIGKILL: the socket file stays behind
    assert os.path.exists(unix_server.address)
    unix_server.restart()
    wire = unix_server.connect()
    wire.send(b"list-tube-used\r\n")
    wire.expect(b"USING default\r\n")


def test_a_client_closing_over_a_unix_socket_releases_its_job(unix_server):
    holder, other = unix_server.connect(), unix_server.connect()
    holder.send(b"put 0 0 60 1\r\nx\r\nreserve\r\n")
    holder.expect(b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n")
    holder.close()
    time.sleep(0.2)
    other.send(b"reserve-with-timeout 0\r\n")
    other.expect(b"RESERVED 1 1\r\nx\r\n")
