"""Nobody who lacks the cluster secret can make the raft port buffer much, hold a connection long,
or disturb the cluster.

Method: one three-node cluster of real ``beanraft serve`` processes serves the whole module. Each
test attacks the leader's raft port from this process for a few seconds (a frame header that
announces 2**31-1 bytes followed by a stream of junk, on connection after connection; hundreds of
idle or trickling connections; a crowd dialling at once with garbage frames) while a probe puts
and deletes jobs through every node. Then it checks what the node let the attacker do (how long
a connection lived, how much memory grew) and that the cluster did not notice: the same leader
and term everywhere, every put answered within 1 s.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

import pytest
from cluster.cluster_harness import Cluster
from polling import readable
from floodkit import LatencyProbe, leader_and_terms, rss_bytes

from beanraft.replication import raft_port

ATTACK_S = 4.0
MAX_LATENCY_S = 1.0
MAX_RSS_GROWTH = 64 * 1024 * 1024
JUNK = b"\xa5" * 65536
# An unproven connection is closed within the auth deadline, plus a tick or two on a busy machine.
CLOSE_WITHIN_S = raft_port.AUTH_DEADLINE_S + 2.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("raft-port"), size=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def raft_endpoint(node) -> tuple[str, int]:
    host, _, port = node.raft_address.rpartition(":")
    return host, int(port)


def closed_by_peer(sock: socket.socket) -> bool:
    """True if the other end closed (EOF or reset); False while it is open and silent."""
    if not readable([sock], 0):
        return False
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def wait_closed_by_peer(sock: socket.socket, seconds: float) -> bool:
    end = time.monotonic() + seconds
    for _poll in range(int(seconds / 0.05) + 2):
        if closed_by_peer(sock):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)
    return False


def stream_oversized_frames(address, seconds: float) -> list[tuple[float, int, bool]]:
    """Connection after connection: a header announcing 2**31-1 bytes, then junk as fast as the
    node takes it. Returns (seconds the connection lived, bytes sent, closed by the node)."""
    lives = []
    end = time.monotonic() + seconds
    for _connection in range(100_000):
        if time.monotonic() >= end:
            break
        sock = socket.create_connection(address, timeout=1.0)
        opened, sent, closed = time.monotonic(), 0, False
        try:
            sock.sendall(struct.pack("i", 2 ** 31 - 1))
            while time.monotonic() < end:
                sent += sock.send(JUNK)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        except socket.timeout:
            pass  # the node stopped reading
        if not closed:  # the attack's time ran out, or the node stopped reading: did it close?
            closed = wait_closed_by_peer(sock, 1.0)
        sock.close()
        lives.append((time.monotonic() - opened, sent, closed))
        if not closed:
            break  # the node held this one for the whole attack: that is the finding
    return lives


def assert_cluster_undisturbed(cluster, before, probe):
    leaders, terms = leader_and_terms(cluster)
    assert leaders == before[0] and terms == before[1], \
        f"leader/term moved from {before} to {(leaders, terms)}: {cluster.describe()}"
    assert not any(probe.errors.values()), probe.summary()
    assert all(count > 0 for count in probe.done.values()), probe.summary()
    assert max(probe.worst.values()) <= MAX_LATENCY_S, probe.summary()


def test_an_oversized_frame_from_a_stranger_is_refused_at_once_and_the_cluster_never_notices(cluster):
    leader = cluster.leader()
    before = leader_and_terms(cluster)
    rss_before = rss_bytes(leader.pid)
    with LatencyProbe(cluster.nodes) as probe:
        lives = stream_oversized_frames(raft_endpoint(leader), ATTACK_S)
        rss_after = rss_bytes(leader.pid)
    assert lives and all(closed for _, _, closed in lives), \
        f"the node kept a connection open for the whole attack: {lives[-1]}"
    assert max(life for life, _, _ in lives) < 1.0, sorted(lives)[-3:]
    assert rss_after - rss_before <= MAX_RSS_GROWTH, (rss_before, rss_after)
    assert_cluster_undisturbed(cluster, before, probe)


def test_idle_and_trickling_strangers_are_closed_after_the_auth_deadline(cluster):
    leader = cluster.leader()
    before = leader_and_terms(cluster)
    socks = []
    with LatencyProbe(cluster.nodes) as probe:
        opened = time.monotonic()
        for number in range(300):
            sock = socket.create_connection(raft_endpoint(leader), timeout=2.0)
            if number % 3 == 1:  # announce a frame that fits the bound, then trickle it
                sock.sendall(struct.pack("i", raft_port.PREAUTH_BUFFER_BYTES - 64) + b"x")
            sock.setblocking(False)
            socks.append(sock)
        open_now = set(range(len(socks)))
        while open_now and time.monotonic() - opened < CLOSE_WITHIN_S + 1:
            for number in list(open_now):
                if closed_by_peer(socks[number]):
                    open_now.discard(number)
                elif number % 3 == 1:
                    try:
                        socks[number].send(b"x")
                    except OSError:
                        pass
            time.sleep(0.2)
        held = time.monotonic() - opened
    for sock in socks:
        sock.close()
    assert not open_now, f"{len(open_now)} of 300 strangers still connected after {held:.1f} s"
    assert_cluster_undisturbed(cluster, before, probe)


def test_a_crowd_dialling_at_once_is_accepted_and_refused_within_seconds(cluster):
    leader = cluster.leader()
    before = leader_and_terms(cluster)
    garbage = struct.pack("i", 40) + b"\x81" + b"\x00" * 39  # well-formed length, no valid seal
    crowd = []
    with LatencyProbe(cluster.nodes) as probe:
        started = time.monotonic()
        for _ in range(200):
            sock = socket.socket()
            sock.setblocking(False)
            code = sock.connect_ex(raft_endpoint(leader))
            assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code)
            crowd.append(sock)
        pending = set(range(len(crowd)))
        sent = set()
        while pending and time.monotonic() - started < 3.0:
            for number in list(pending):
                sock = crowd[number]
                if number not in sent:
                    try:
                        sock.send(garbage)
                        sent.add(number)
                    except (BlockingIOError, OSError):
                        continue
                if closed_by_peer(sock):
                    pending.discard(number)
            time.sleep(0.05)
        took = time.monotonic() - started
    for sock in crowd:
        sock.close()
    assert not pending, f"{len(pending)} of 200 garbage connections not refused after {took:.1f} s"
    assert_cluster_undisturbed(cluster, before, probe)
