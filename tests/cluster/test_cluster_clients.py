"""Clients on different nodes of a real three-process cluster see one queue, as if it were one
beanstalkd: jobs cross nodes, reads are linearizable, ids are unique, waiters are served in order,
and every replica ends with the same state.

Method: each test starts a fresh cluster on loopback (``cluster`` fixture) and talks to its nodes
with the unchanged greenstalk client (or raw bytes where a reply must be held back); cluster-wide
facts such as the number of waiting reserves are read back through the protocol, and replica state
through the state digest in each node's GET /status, compared at equal applied indexes. The
mixed workload is drawn from a seeded random generator (BEANRAFT_CLUSTER_SEED to try another); the
interleaving with the cluster's own timers is real time, so a seed does not replay exactly.
"""

from __future__ import annotations

import os
import random
import threading

import greenstalk
import pytest
from cluster_harness import LineClient, wait_for


def wait_until_waiting(client: greenstalk.Client, count: int) -> None:
    """Waits until the cluster has ``count`` reserves waiting (a replicated figure)."""
    wait_for(f"{count} waiting reserves", lambda: client.stats()["current-waiting"] == count,
             timeout_s=15, describe=lambda: str(client.stats()["current-waiting"]))


def test_a_put_on_one_follower_reaches_a_reserve_blocked_on_the_other_and_only_its_holder_may_delete_it(
        cluster, clients):
    leader = cluster.leader()
    first, second = cluster.followers()
    producer, worker, third = clients(first), clients(second), clients(leader)
    reserved: list[greenstalk.Job] = []
    thread = threading.Thread(target=lambda: reserved.append(worker.reserve(timeout=30)), daemon=True)
    thread.start()
    wait_until_waiting(third, 1)

    job_id = producer.put("across the cluster")
    thread.join(timeout=30)

    assert [(job.id, job.body) for job in reserved] == [(job_id, "across the cluster")]
    assert third.stats_job(job_id)["state"] == "reserved"
    with pytest.raises(greenstalk.NotFoundError):
        third.delete(job_id)
    with pytest.raises(greenstalk.NotFoundError):
        producer.delete(job_id)
    assert producer.stats_job(job_id)["state"] == "reserved"
    worker.delete(reserved[0])
    with pytest.raises(greenstalk.NotFoundError):
        third.peek(job_id)


def test_a_put_acknowledged_on_one_node_is_seen_by_reads_issued_afterwards_on_the_other_two(
        cluster, clients):
    nodes = cluster.nodes
    connections = [clients(node) for node in nodes]
    for round_number in range(12):
        writer = connections[round_number % 3]
        readers = [c for c in connections if c is not writer]
        tube = f"ryw-{round_number}"
        writer.use(tube)
        body = f"job {round_number}"
        job_id = writer.put(body)
        for reader in readers:  # no sleep, no retry: the first read must see the write
            assert reader.peek(job_id).body == body
            stats = reader.stats_job(job_id)
            assert (stats["tube"], stats["state"]) == (tube, "ready")
            assert reader.stats_tube(tube)["current-jobs-ready"] == 1
            assert tube in reader.tubes()
        writer.delete(job_id)
        for reader in readers:
            with pytest.raises(greenstalk.NotFoundError):
                reader.peek(job_id)
            with pytest.raises(greenstalk.NotFoundError):
                reader.stats_job(job_id)


def test_job_ids_stay_distinct_and_gapless_when_every_node_takes_puts_at_once(cluster, clients):
    threads_per_node, puts_per_thread = 2, 40
    total = len(cluster.nodes) * threads_per_node * puts_per_thread
    connections = [clients(node) for node in cluster.nodes for _ in range(threads_per_node)]
    ids: list[list[int]] = [[] for _ in connections]
    errors: list[BaseException] = []

    def produce(client: greenstalk.Client, out: list[int]) -> None:
        try:
            for i in range(puts_per_thread):
                out.append(client.put(f"p{i}"))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=produce, args=(c, out), daemon=True)
               for c, out in zip(connections, ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors and not any(t.is_alive() for t in threads), errors
    every_id = [job_id for out in ids for job_id in out]
    assert len(set(every_id)) == len(every_id) == total
    assert sorted(every_id) == list(range(1, total + 1))  # nothing burned an id
    for out in ids:
        assert out == sorted(out)  # one connection's puts are applied in its order
    for client in connections[::threads_per_node]:
        stats = client.stats()
        assert (stats["total-jobs"], stats["current-jobs-ready"]) == (total, total)


@pytest.mark.parametrize("order", [("f1", "leader", "f2"), ("f2", "f1", "leader")])
def test_workers_blocked_on_different_nodes_are_served_oldest_waiter_first(cluster, clients, order):
    leader = cluster.leader()
    f1, f2 = cluster.followers()
    where = {"leader": leader, "f1": f1, "f2": f2}
    monitor = clients(leader)
    workers = []
    for count, name in enumerate(order, 1):
        worker = LineClient(where[name].client_address)
        worker.send(b"reserve-with-timeout 60\r\n")
        wait_until_waiting(monitor, count)  # this waiter is registered before the next one asks
        workers.append(worker)
    producer = clients(f2)
    try:
        job_ids = [producer.put(f"job for waiter {i}") for i in range(len(workers))]
        got = [worker.read_job(timeout_s=20) for worker in workers]
        assert got == [(job_id, f"job for waiter {i}".encode()) for i, job_id in enumerate(job_ids)]
    finally:
        for worker in workers:
            worker.close()


def _random_step(rng: random.Random, client: greenstalk.Client, tubes: list[str]) -> None:
    """One random client action; replies that say 'not now' (NOT_FOUND, TIMED_OUT...) are fine."""
    tube = rng.choice(tubes)
    action = rng.choices(["put", "reserve", "kick", "kick_job", "pause", "watch"],
                         weights=[10, 8, 1, 1, 1, 1])[0]
    try:
        if action == "put":
            client.use(tube)
            client.put(f"body {rng.random()}", priority=rng.randrange(3),
                       delay=rng.choice([0, 0, 0, 1]), ttr=rng.choice([1, 2, 60]))
        elif action == "reserve":
            job = client.reserve(timeout=0)
            then = rng.choice(["delete", "release", "bury", "touch", "keep"])
            if then == "delete":
                client.delete(job)
            elif then == "release":
                client.release(job, priority=rng.randrange(3), delay=rng.choice([0, 1]))
            elif then == "bury":
                client.bury(job)
            elif then == "touch":
                client.touch(job)
        elif action == "kick":
            client.use(tube)
            client.kick(rng.randrange(1, 4))
        elif action == "kick_job":
            client.kick_job(rng.randrange(1, 40))
        elif action == "pause":
            client.pause_tube(tube, rng.choice([0, 1]))
        else:
            client.watch(tube)
    except (greenstalk.NotFoundError, greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
        pass


def test_replicas_end_with_equal_state_digests_after_a_mixed_workload_and_a_follower_restart(
        cluster, clients):
    seed = int(os.environ.get("BEANRAFT_CLUSTER_SEED", "20261129"))  # another seed explores more
    rng = random.Random(seed)
    tubes = ["default", "alpha", "beta"]
    empty_digest = cluster.converged()[cluster.nodes[0].name]["digest"]
    restarted = cluster.followers()[1]
    connections = {node.name: clients(node) for node in cluster.nodes}

    for step in range(240):
        if step == 80:
            cluster.kill(restarted)  # kill -9 in the middle of the workload
            connections.pop(restarted.name)
        if step == 160:
            cluster.restart(restarted)
            connections[restarted.name] = clients(restarted)
        _random_step(rng, rng.choice(list(connections.values())), tubes)
    for client in connections.values():
        client.close()  # ends the sessions: their reserved jobs go back to ready

    docs = cluster.converged(timeout_s=30)
    digests = {name: doc["digest"] for name, doc in docs.items()}
    assert len(set(digests.values())) == 1, f"seed {seed}: replicas diverged: {digests}"
    assert digests[restarted.name] != empty_digest, f"seed {seed}"
    assert len({str(doc["jobs"]) for doc in docs.values()}) == 1, f"seed {seed}: {docs}"
