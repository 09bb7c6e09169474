"""Hostile clients cost a node bounded memory and never stop it from serving everybody else.

Method: a real `beanraft serve` process per test (the ``server`` fixture, BeanRaft targets only);
its resident memory is read from /proc/PID/status while a client misbehaves, and a second,
well-behaved client checks that the node still answers and no job was lost.
"""

from __future__ import annotations

import socket
import time

import pytest

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def node(server):
    if server.kind != "beanraft":
        pytest.skip("measures the memory of a BeanRaft node process")
    return server


def raw(node) -> socket.socket:
    sock = socket.create_connection(node.address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_a_1_gib_body_announced_over_the_size_limit_is_never_buffered(node):
    wire = node.connect()
    wire.send(b"put 0 0 60 5\r\nfirst\r\n")
    wire.expect(b"INSERTED 1\r\n")
    before = rss_bytes(node.pid)
    hog = raw(node)
    hog.sendall(b"put 0 0 60 1073741824\r\n")
    chunk = b"z" * MIB
    for _ in range(128):  # 128 MiB of the announced 1 GiB
        hog.sendall(chunk)
    assert wire.yaml(b"stats-job 1")["state"] == "ready"  # others are served meanwhile
    grown = rss_bytes(node.pid) - before
    assert grown < 32 * MIB, f"the node grew by {grown // MIB} MiB while discarding a body"
    hog.close()
    wire.send(b"peek 1\r\n")
    wire.expect(b"FOUND 1 5\r\nfirst\r\n")


def test_a_client_that_never_reads_its_replies_is_throttled_not_buffered(node):
    wire = node.connect()
    before = rss_bytes(node.pid)
    hog = raw(node)
    hog.setblocking(False)
    request = b"list-tubes\r\n" * 4096
    sent, deadline = 0, time.monotonic() + 5
    while time.monotonic() < deadline and sent < 512 * MIB:
        try:
            sent += hog.send(request)
        except BlockingIOError:
            time.sleep(0.01)  # the node stopped reading us: that is the point
    wire.send(b"put 0 0 60 2\r\nok\r\n")
    assert wire.read_line().startswith(b"INSERTED ")
    grown = rss_bytes(node.pid) - before
    assert grown < 64 * MIB, f"the node grew by {grown // MIB} MiB for a client that never reads"
    assert sent < 512 * MIB, "the node kept reading a client that never reads its replies"
    hog.close()


def test_thousands_of_idle_connections_leave_the_node_serving(node):
    idle = []
    try:
        for _ in range(2000):
            idle.append(raw(node))
        wire = node.connect(timeout=15)
        wire.send(b"put 0 0 60 4\r\nbusy\r\n")
        assert wire.read_line(timeout=15).startswith(b"INSERTED ")
        stats = wire.yaml(b"stats")
        assert int(stats["current-connections"]) >= 2001
        wire.send(b"reserve-with-timeout 0\r\n")
        assert wire.read_line(timeout=15).startswith(b"RESERVED ")
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_vanishes_mid_body_costs_one_id_and_nothing_else(node):
    wire = node.connect()
    wire.send(b"put 0 0 60 3\r\nabc\r\n")
    wire.expect(b"INSERTED 1\r\n")
    quitter = raw(node)
    quitter.sendall(b"put 0 0 60 100\r\nonly part of the bo")
    time.sleep(0.2)
    quitter.close()
    time.sleep(0.3)
    wire.send(b"put 0 0 60 3\r\ndef\r\n")
    wire.expect(b"INSERTED 3\r\n")  # id 2 went with the vanished body, as in beanstalkd
    wire.send(b"peek 1\r\n")
    wire.expect(b"FOUND 1 3\r\nabc\r\n")


def test_garbage_bytes_get_protocol_errors_and_the_node_keeps_serving(node):
    import random

    rng = random.Random(7)
    for _ in range(20):
        junk = raw(node)
        junk.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))))
        junk.close()
    wire = node.connect()
    wire.send(b"put 0 0 60 2\r\nhi\r\n")
    assert wire.read_line().startswith(b"INSERTED ")
