"""A leader that runs out of file descriptors keeps every listener bound, logs a few lines, and serves
again as soon as descriptors are free.

Method: a three-node cluster of real ``beanraft serve`` processes; the leader's open-files limit is
lowered (``prlimit`` on its PID) to a little above what it uses. Hundreds of client connections,
a few HTTP connections and peer-like dials of its raft port then arrive while it cannot accept
them (EMFILE on every listener), for a few seconds. When they go away, within 10 s a leader must
be agreed, the old leader's raft port must accept (a dial is taken and then refused for its
garbage, which only an accepting listener can do), and a put must succeed through every node;
all nodes' logs together must have grown by less than 5 MB. A second, in-process test drives one
client-port listener through a long burst of EMFILE (its socket's ``accept`` fails for a while)
and counts the log lines and retries.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import struct
import time

import pytest
from cluster.cluster_harness import Cluster, LineClient, wait_for
from floodkit import open_files

from beanraft.node import accept

HOLD_S = 3.0
RECOVER_S = 10.0
MAX_LOG_GROWTH = 5 * 1024 * 1024
SPARE_FDS = 24  # above what the leader has open when its limit is lowered

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("fd-exhaustion"), size=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def endpoint(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def dial(address: tuple[str, int]) -> socket.socket:
    """A connection attempt that does not wait: the kernel completes it from the backlog."""
    sock = socket.socket()
    sock.setblocking(False)
    code = sock.connect_ex(address)
    assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code)
    return sock


def log_bytes(cluster) -> int:
    return sum(node.log_path.stat().st_size for node in cluster.nodes)


def raft_port_accepts(address: tuple[str, int]) -> bool:
    """True if the listener accepts: it takes a garbage frame and closes the connection."""
    try:
        with socket.create_connection(address, timeout=2.0) as sock:
            sock.sendall(struct.pack("i", 40) + b"\x81" + b"\x00" * 39)
            return sock.recv(10) == b""
    except ConnectionResetError:
        return True
    except OSError:  # refused (unbound), or no answer in time (not accepting)
        return False


def put_through_every_node(cluster) -> bool:
    for node in cluster.nodes:
        try:
            with LineClient(node.client_address, timeout_s=2.0) as client:
                client.put(b"after the drought")
        except (OSError, AssertionError, TimeoutError):
            return False
    return True


def test_a_leader_out_of_file_descriptors_keeps_its_listeners_and_recovers_within_seconds(cluster):
    leader = cluster.leader()
    logs_before = log_bytes(cluster)
    limit = open_files(leader.pid) + SPARE_FDS
    resource.prlimit(leader.pid, resource.RLIMIT_NOFILE, (limit, limit))
    crowd = []
    try:
        crowd += [dial(leader.client_address) for _ in range(300)]
        crowd += [dial(endpoint(leader.http_address)) for _ in range(20)]
        crowd += [dial(endpoint(leader.raft_address)) for _ in range(20)]  # as a peer redialling
        time.sleep(HOLD_S)
        assert open_files(leader.pid) >= limit - 2, "the leader never ran out of descriptors"
    finally:
        for sock in crowd:
            sock.close()
    gone = time.monotonic()

    new_leader = cluster.leader(timeout_s=RECOVER_S)
    wait_for("the old leader's raft port to accept", lambda: raft_port_accepts(
        endpoint(leader.raft_address)), max(0.5, RECOVER_S - (time.monotonic() - gone)),
        describe=cluster.describe)
    wait_for("a put through every node", lambda: put_through_every_node(cluster),
             max(0.5, RECOVER_S - (time.monotonic() - gone)), poll_s=0.2,
             describe=cluster.describe)
    recovered_s = time.monotonic() - gone
    growth = log_bytes(cluster) - logs_before
    assert growth < MAX_LOG_GROWTH, f"logs grew {growth} bytes"
    print(f"recovered in {recovered_s:.1f} s; leader {leader.name} -> {new_leader.name}; "
          f"logs grew {growth} bytes")


class ScarceSocket:
    """A real listening socket whose accept fails with EMFILE until ``until`` (monotonic)."""

    def __init__(self, sock: socket.socket, until: float):
        self._sock = sock
        self.until = until
        self.failures = 0

    def accept(self):
        if time.monotonic() < self.until:
            self.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_a_listener_without_descriptors_backs_off_logs_one_burst_and_serves_after(
        monkeypatch, caplog):
    monkeypatch.setattr(accept, "QUIET_S", 0.5)
    caplog.set_level(logging.INFO, logger="beanraft.accept")

    async def scenario():
        loop = asyncio.get_running_loop()
        served = loop.create_future()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                transport.write(b"hello")
                if not served.done():
                    served.set_result(True)

        listening = socket.create_server(("127.0.0.1", 0), backlog=16)
        scarce = ScarceSocket(listening, until=time.monotonic() + 1.5)
        listener = accept.Listener(loop, scarce, Echo, "client port")
        client = socket.create_connection(listening.getsockname(), timeout=5)  # waits in backlog
        await asyncio.wait_for(served, 10)
        data = await loop.run_in_executor(None, client.recv, 5)
        await asyncio.sleep(0.8)  # a quiet spell ends the burst
        client.close()
        listener.close()
        return data, scarce.failures

    data, failures = asyncio.run(scenario())
    assert data == b"hello"
    # Backoff: 0.05 s doubling to 1 s covers 1.5 s in a handful of retries, not one per slot.
    assert 2 <= failures <= 8, failures
    lines = [r for r in caplog.records if r.name == "beanraft.accept"]
    assert [r.levelname for r in lines] == ["WARNING", "INFO"], [r.getMessage() for r in lines]
