"""Goal: the client rides through the death and the freezing of the node it is on, and says
exactly what it tried when nothing can serve it.

Method: one real three-node BeanRaft cluster for the module; a Client given all three addresses
is pinned to a node, which is then killed with SIGKILL or frozen with SIGSTOP (and brought back
before the test ends). Against the real beanstalkd, a frozen server shows what happens to a put
whose reply is lost when the server has no idempotent put.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from client_harness import CuttableProxy, ServerProcess, addresses_of

from beanraft import client as bc
from beanraft.client.blocking import MAX_ABANDONED


def node_of(cluster, client):
    return next(node for node in cluster.nodes if node.client_address == client.address)


def on_node(cluster, node, tube, **kwargs):
    """A client with every address whose first connection is ``node`` (others are listed)."""
    others = [n.client_address for n in cluster.nodes if n is not node]
    client = bc.Client([node.client_address], use=tube, watch=tube, **kwargs)
    client._core.addresses = [node.client_address] + others
    return client


@pytest.fixture
def revive(client_cluster):
    """Brings every killed or frozen node back after the test."""
    yield
    for node in client_cluster.nodes:
        if node.running:
            node.signal(signal.SIGCONT)
    for node in client_cluster.nodes:
        if not node.running:
            client_cluster.restart(node)
    client_cluster.wait_ready()


def test_a_killed_node_is_left_for_another_with_the_tubes_restored(client_cluster, revive, tube):
    node = client_cluster.leader()
    with on_node(client_cluster, node, tube) as client:
        first = client.put("before")
        client.watch("other-" + tube)
        client_cluster.kill(node)
        second = client.put("after")  # no exception: the client moved on
        assert node_of(client_cluster, client) is not node
        assert client.failovers == 1
        assert client.using() == tube
        assert sorted(client.watching()) == sorted([tube, "other-" + tube])
        assert {client.reserve(timeout=5).id, client.reserve(timeout=5).id} == {first, second}


def test_a_frozen_node_is_left_after_the_reply_timeout(client_cluster, revive, tube):
    node = client_cluster.followers()[0]
    with on_node(client_cluster, node, tube, timeout=1.0) as client:
        client.put("before")
        node.signal(signal.SIGSTOP)
        started = time.monotonic()
        assert client.stats_tube(tube)["current-jobs-ready"] == 1
        paused = time.monotonic() - started
        assert node_of(client_cluster, client) is not node
        assert 1.0 <= paused < 10, paused


def test_a_blocked_reserve_is_issued_again_on_the_next_node(client_cluster, revive, tube):
    node = client_cluster.followers()[0]
    got: list = []
    with on_node(client_cluster, node, tube) as worker:
        thread = threading.Thread(target=lambda: got.append(worker.reserve(timeout=30)))
        thread.start()
        time.sleep(0.5)  # the reserve is waiting on the server
        client_cluster.kill(node)
        time.sleep(0.5)
        with bc.Client(addresses_of(client_cluster), use=tube) as producer:
            job_id = producer.put("for the waiting worker")
        thread.join(timeout=30)
        assert [job.id for job in got] == [job_id]
        assert node_of(client_cluster, worker) is not node
        got[0].delete()


def test_the_async_client_fails_over_with_commands_in_flight(client_cluster, revive, tube):
    import asyncio

    node = client_cluster.leader()
    others = [n.client_address for n in client_cluster.nodes if n is not node]

    async def scenario():
        client = bc.AsyncClient([node.client_address], use=tube, watch=tube)
        await client.connect()
        client._core.addresses += others
        await asyncio.gather(*(client.stats_tube(tube) for _ in range(20)))
        client_cluster.kill(node)
        stats = await asyncio.gather(*(client.stats_tube(tube) for _ in range(20)))
        assert all(s["name"] == tube for s in stats)
        assert client.address != node.client_address
        await client.close()

    asyncio.run(scenario())


def test_no_answer_anywhere_raises_unavailable_within_the_failover_timeout(tmp_path):
    frozen = ServerProcess("beanstalkd", tmp_path).start()
    try:
        with bc.Client(frozen.address, timeout=0.3, failover_timeout=1.5) as client:
            client._core.addresses.append(("127.0.0.1", 1))
            frozen.process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(bc.UnavailableError) as caught:
                client.stats()
            elapsed = time.monotonic() - started
            # Given-up connections are kept only up to the bound, however many were tried.
            assert client._core.episode is None
            assert 0 < len(client._abandoned) <= MAX_ABANDONED
        message = str(caught.value)
        assert f"{frozen.address}: no reply within 0.3 s" in message
        assert int(message.split(f"{frozen.address}: no reply within 0.3 s (")[1].split("x")[0]) > MAX_ABANDONED
        assert "127.0.0.1:1: connection refused" in message
        assert 1.5 <= elapsed < 4, elapsed
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        frozen.stop()


def test_a_put_whose_reply_is_lost_on_plain_beanstalkd_is_reported_as_unknown(tmp_path):
    server = ServerProcess("beanstalkd", tmp_path).start()
    try:
        with bc.Client(server.address, use="lost", timeout=0.3, failover_timeout=20) as client:
            server.process.send_signal(signal.SIGSTOP)
            threading.Timer(1.2, server.process.send_signal, (signal.SIGCONT,)).start()
            with pytest.raises(bc.UnavailableError, match="outcome is unknown"):
                client.put("maybe")
            # The server did read the put from the abandoned connection: the job exists.
            assert client.stats_tube("lost")["total-jobs"] == 1
            assert client.put("next") > 0  # and the client goes on
    finally:
        server.stop()


def test_a_plain_beanstalkd_that_hung_up_while_the_client_was_idle_is_left_before_the_put(
        tmp_path):
    """Without put-key a put sent to a dead connection could not be replayed: the client checks
    for a hang-up before it sends, once the connection has been idle for a moment."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = ServerProcess("beanstalkd", tmp_path / "first").start()
    second = ServerProcess("beanstalkd", tmp_path / "second").start()
    try:
        with bc.Client([first.address, second.address], use="moved", timeout=2,
                       failover_timeout=10) as client:
            client.put("before")
            gone = client.address
            (first if gone[1] == first.port else second).kill()
            time.sleep(0.05)
            assert client.put("after the hang-up") > 0  # no error: sent to the other server
            assert client.address != gone and client.failovers == 1
            assert client.stats_tube("moved")["total-jobs"] == 1
    finally:
        first.stop()
        second.stop()


def test_a_reserved_job_stays_the_workers_across_a_kill_and_is_deleted_through_another_node(
        client_cluster, revive, tube):
    node = client_cluster.leader()
    with on_node(client_cluster, node, tube) as worker, \
            bc.Client(addresses_of(client_cluster), use=tube, watch=tube) as other:
        job_id = worker.put("mine")
        job = worker.reserve(timeout=5)
        client_cluster.kill(node)
        job.touch()  # fails over, resumes the session: the job is still reserved to the worker
        assert node_of(client_cluster, worker) is not node
        with pytest.raises(bc.TimedOutError):
            other.reserve(timeout=1)  # nobody else gets it
        assert other.stats_job(job_id)["state"] == "reserved"
        job.delete()
        with pytest.raises(bc.NotFoundError):
            other.peek(job_id)


def test_sessions_outlive_a_restart_of_their_node_and_resume_on_it_or_elsewhere(
        client_cluster, revive, tube):
    node = client_cluster.leader()  # the cluster elects another leader while it is down
    with bc.Client([node.client_address], watch=tube, failover_timeout=60) as loyal, \
            on_node(client_cluster, node, tube) as roaming, \
            bc.Client(addresses_of(client_cluster), use=tube, watch=tube) as other:
        first, second = other.put("for the loyal worker"), other.put("for the roaming one")
        jobs = [loyal.reserve(timeout=5), roaming.reserve(timeout=5)]
        assert sorted(job.id for job in jobs) == [first, second]
        client_cluster.kill(node)
        client_cluster.restart(node)  # back well within the grace, before anyone resumed
        for job in jobs:
            job.touch()  # each resumes its session: on the restarted node, or on another
        assert node_of(client_cluster, loyal) is node
        for job_id in (first, second):
            stats = other.stats_job(job_id)
            assert (stats["state"], stats["reserves"]) == ("reserved", 1)  # nobody else had it
        with pytest.raises(bc.TimedOutError):
            other.reserve(timeout=1)
        for job in jobs:
            job.delete()
        assert other.stats_tube(tube)["current-jobs-reserved"] == 0


def settled_commit_index(node) -> int:
    """The node's commit index once /status (refreshed every 0.1-0.2 s) shows what was
    committed before this call: two readings half a second apart agree."""
    previous = node.status()["commit_index"]
    for _ in range(40):
        time.sleep(0.5)
        current = node.status()["commit_index"]
        if current == previous:
            return current
        previous = current
    raise AssertionError("the commit index never settled")


def test_an_idle_worker_writes_nothing_to_the_log_and_still_gets_the_next_job(
        client_cluster, tube):
    leader = client_cluster.leader()
    with bc.Client(addresses_of(client_cluster), watch=tube) as worker, \
            bc.Client(addresses_of(client_cluster), use=tube) as producer:
        assert tube in worker.watching()  # connected, session id and tubes committed
        before, failovers = settled_commit_index(leader), worker.failovers
        with pytest.raises(bc.TimedOutError):
            worker.reserve(timeout=4)  # four one-second slices, each used to commit twice
        # The slices used to write eight entries. Allowed: a stray TICK for an earlier test's
        # timer, and on a machine so loaded that a slice's reply came too late, the entries of
        # each failover (the resume, the watch and ignore, the old connection's close).
        written = leader.status()["commit_index"] - before
        assert written <= 2 + 4 * (worker.failovers - failovers)
        timer = threading.Timer(1.5, lambda: producer.put("wake up"))
        timer.start()
        try:
            job = worker.reserve(timeout=30)  # waiting off the log, it still sees the put
        finally:
            timer.join()
        assert job.body == "wake up"
        job.delete()


def test_a_put_replayed_through_another_node_creates_one_job(client_cluster, tube):
    with bc.Client(addresses_of(client_cluster), use=tube) as client:
        first = client.put("once", key=f"k-{tube}")
        again = client.put("once", key=f"k-{tube}")  # what a replay sends
        assert again == first
        assert client.stats_tube(tube)["total-jobs"] == 1


def test_a_node_without_a_leader_is_left_and_the_call_completes_once_a_majority_is_back(
        client_cluster, revive, tube):
    node = client_cluster.followers()[0]
    others = [n for n in client_cluster.nodes if n is not node]
    with on_node(client_cluster, node, tube, timeout=1.0) as client:
        client.put("before")
        for other in others:  # node is alive but has no majority: it cannot commit anything
            other.signal(signal.SIGSTOP)
        threading.Timer(4.0, lambda: [o.signal(signal.SIGCONT) for o in others]).start()
        started = time.monotonic()
        job_id = client.put("during")  # no exception: the client waits the outage out
        assert time.monotonic() - started >= 3.0
        assert client.failovers >= 1
        assert client.peek(job_id).body == "during"
        assert client.stats_tube(tube)["total-jobs"] == 2


def test_a_job_whose_reserved_reply_was_lost_goes_to_the_next_reserve_after_the_resume(
        client_cluster, tube):
    node = client_cluster.followers()[0]
    proxy = CuttableProxy(node.client_address)
    try:
        others = [n.client_address for n in client_cluster.nodes if n is not node]
        with bc.Client([proxy.address], watch=tube) as worker, \
                bc.Client(addresses_of(client_cluster), use=tube) as producer:
            worker._core.addresses += others
            got: list = []
            thread = threading.Thread(target=lambda: got.append(worker.reserve(timeout=20)))
            thread.start()
            time.sleep(0.5)
            proxy.swallow.set()  # the node's RESERVED will not reach the worker
            job_id = producer.put("lost reply")
            deadline = time.monotonic() + 10
            while producer.stats_job(job_id)["state"] != "reserved":
                assert time.monotonic() < deadline, "the job was never reserved"
                time.sleep(0.05)
            proxy.hang_up_on_clients()  # ...and the node is gone, from the worker's side
            thread.join(timeout=30)
            assert [job.id for job in got] == [job_id]  # handed over after the resume
            assert got[0].body == "lost reply"
            got[0].delete()
            with pytest.raises(bc.NotFoundError):
                producer.peek(job_id)
    finally:
        proxy.close()
