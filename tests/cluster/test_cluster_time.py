"""Time is the cluster's: timers fire on time whichever node takes the command, clocks differing.

Method: three real nodes whose wall clocks differ (``skewed_clock.py`` shifts n1's by +0.4 s and
n2's by -0.3 s; monotonic clocks are left alone). Clients on every node put delayed jobs, wait in
reserve-with-timeout and hold jobs past their TTR, and the test measures with its own monotonic
clock when each timer fires: never before the deadline, at most 50 ms after it (measured from
the acknowledgement, so the client's own round trip counts against us). Had each node stamped
its own clock into its entries, n1's timers would fire 0.4 s late and n2's 0.3 s early. Then the
leader is killed: timers set before the failover fire on time under a leader whose clock differs.
"""

from __future__ import annotations

import selectors
import sys
import time
from pathlib import Path

import pytest
from cluster_harness import LineClient

from beanraft.replication.clock import SLEW

LATE_S = 0.05  # the bound on how late a timer may fire
EARLY_S = 0.002  # monotonic and wall-clock rates, and the stamp's place inside the put's round trip


def _skewed(seconds: str) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("skewed_clock.py")), seconds]


@pytest.fixture
def skewed_cluster(start_cluster):
    return start_cluster(launchers={0: _skewed("+0.4"), 1: _skewed("-0.3")})


def _arrivals(clients: list[LineClient], timeout_s: float) -> dict[int, float]:
    """Waits until each client has a reply to read; its index -> monotonic time it arrived."""
    seen: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, client in enumerate(clients):
            selector.register(client.sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + timeout_s
        while len(seen) < len(clients) and time.monotonic() < deadline:
            for key, _events in selector.select(timeout=deadline - time.monotonic()):
                seen[key.data] = time.monotonic()
                selector.unregister(key.fileobj)
    assert len(seen) == len(clients), f"only {sorted(seen)} of {len(clients)} replied in time"
    return seen


def _workers(cluster, tube: str) -> list[LineClient]:
    """One client per node watching only ``tube``."""
    workers = []
    for node in cluster.nodes:
        worker = LineClient(node.client_address)
        assert worker.request(f"watch {tube}".encode()) == b"WATCHING 2"
        assert worker.request(b"ignore default") == b"WATCHING 1"
        workers.append(worker)
    return workers


def _put_delayed(cluster, tube: str, delay: int) -> dict[bytes, tuple[float, float]]:
    """Puts one job with ``delay`` through each node, its name as the body; (sent, acknowledged)."""
    times = {}
    for node in cluster.nodes:
        with LineClient(node.client_address) as producer:
            assert producer.request(f"use {tube}".encode()) == f"USING {tube}".encode()
            sent = time.monotonic()
            producer.put(node.name.encode(), delay=delay)
            times[node.name.encode()] = (sent, time.monotonic())
    return times


def _assert_fired_on_time(fired: dict, started: dict, delay: float) -> None:
    """Each timer fired in [started + delay, acknowledged + delay + LATE_S].

    ``fired`` maps a key (a job's body or id, a worker) to when its reply arrived; ``started``
    the same keys to (request sent, acknowledged) of what set the timer.
    """
    late = {key: round(when - started[key][0] - delay, 3) for key, when in fired.items()}
    for key, when in fired.items():
        sent, acked = started[key]
        # A leader moves the timeline towards its own clock at SLEW at most (replication/clock.py).
        assert sent + delay * (1 - SLEW) - EARLY_S <= when <= acked + delay * (1 + SLEW) + LATE_S, (
            f"{key!r} fired {late[key]:+.3f} s after its deadline (set in a round trip of "
            f"{acked - sent:.3f} s); all: {late}")


def test_delays_reserve_timeouts_and_ttrs_fire_on_time_on_every_node_though_their_clocks_differ(
        skewed_cluster):
    cluster = skewed_cluster
    workers = _workers(cluster, "delays")
    try:
        # Delays: a job put through each node, a worker waiting on each node.
        for worker in workers:
            worker.send(b"reserve-with-timeout 10\r\n")
        puts = _put_delayed(cluster, "delays", delay=1)
        arrived = _arrivals(workers, timeout_s=5)
        fired = {workers[i].read_job()[1]: when for i, when in arrived.items()}
        assert sorted(fired) == sorted(puts)
        _assert_fired_on_time(fired, puts, delay=1)

        # Reserve timeouts: a reserve-with-timeout 1 on each node, nothing to reserve.
        sent = {}
        for index, worker in enumerate(workers):
            sent[index] = time.monotonic()
            worker.send(b"reserve-with-timeout 1\r\n")
        arrived = _arrivals(workers, timeout_s=5)
        assert [worker.read_line() for worker in workers] == [b"TIMED_OUT"] * 3
        _assert_fired_on_time(arrived, {i: (t, t) for i, t in sent.items()}, delay=1)

        # TTR: each worker reserves a job with TTR 1 and keeps it; its TTR runs out on time and
        # a waiting worker on the next node gets it.
        with LineClient(cluster.nodes[0].client_address) as producer:
            assert producer.request(b"use ttr") == b"USING ttr"
            for node in cluster.nodes:
                producer.put(node.name.encode(), ttr=1)
        holders, waiters = _workers(cluster, "ttr"), _workers(cluster, "ttr")
        try:
            reserved = {}
            for holder in holders:
                started = time.monotonic()
                holder.send(b"reserve-with-timeout 0\r\n")
                job_id, _body = holder.read_job(timeout_s=5)
                reserved[job_id] = (started, time.monotonic())
            for waiter in waiters:
                waiter.send(b"reserve-with-timeout 10\r\n")
            arrived = _arrivals(waiters, timeout_s=5)
            fired = {waiters[i].read_job()[0]: when for i, when in arrived.items()}
            assert sorted(fired) == sorted(reserved)
            _assert_fired_on_time(fired, reserved, delay=1)
        finally:
            for client in holders + waiters:
                client.close()
    finally:
        for worker in workers:
            worker.close()


def test_timers_set_before_a_leader_change_fire_on_time_under_a_leader_with_another_clock(
        skewed_cluster):
    cluster = skewed_cluster
    old_leader = cluster.leader()
    workers = [w for w, node in zip(_workers(cluster, "failover"), cluster.nodes)
               if node is not old_leader]
    try:
        for worker in workers:
            worker.send(b"reserve-with-timeout 10\r\n")
        puts = _put_delayed(cluster, "failover", delay=3)
        cluster.kill(old_leader)
        assert cluster.leader(timeout_s=2.5) is not old_leader  # before the deadline
        arrived = _arrivals(workers, timeout_s=6)
        # Two workers, three jobs: the first two due go out, whichever node took them.
        fired = {workers[i].read_job()[1]: when for i, when in arrived.items()}
        assert sorted(fired) == sorted(puts)[:2]
        _assert_fired_on_time(fired, puts, delay=3)
    finally:
        for worker in workers:
            worker.close()


def test_a_node_that_rejoins_with_its_clock_ahead_does_not_move_the_cluster_time(skewed_cluster):
    """Its first proposals carry its own clock (it has no timeline to follow yet): the leader's
    stamp replaces it, so deadlines already set neither come early nor late."""
    cluster = skewed_cluster
    leader = cluster.leader()
    rejoining = cluster.followers()[0]
    with LineClient(leader.client_address) as worker:
        assert worker.request(b"watch rejoin") == b"WATCHING 2"
        worker.send(b"reserve-with-timeout 10\r\n")
        cluster.kill(rejoining)
        with LineClient(leader.client_address) as producer:
            assert producer.request(b"use rejoin") == b"USING rejoin"
            sent = time.monotonic()
            producer.put(b"due", delay=4)
            put = (sent, time.monotonic())
        time.sleep(1.2)  # down for longer than the timeline's continuity window
        rejoining.launcher = _skewed("+0.8")
        cluster.restart(rejoining, timeout_s=2.5)  # it proposes its registration at once
        arrived = _arrivals([worker], timeout_s=5)
        assert worker.read_job()[1] == b"due"
        _assert_fired_on_time({b"due": arrived[0]}, {b"due": put}, delay=4)
