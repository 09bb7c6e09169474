"""kill -9 of every node at once loses no acknowledged job; a restarted follower catches up.

Method: a loopback cluster of three real processes with -b directories; producers put (some
jobs delayed by 300 s) and workers reserve, then release (some delayed), bury, delete or keep
holding, recording a history. All three processes are killed with SIGKILL in the same instant,
restarted with the same flags, and inspected through one node with ``peek`` and ``stats-job``.

What must hold, job by job, from the history alone: an acknowledged put is present with its
body; its state and priority are one of those the recorded operations allow (a reservation comes
back ready, since every session ended with the crash; an indefinite operation allows both its
before and its after); an acknowledged delete stays deleted; no job exists that nobody put; and a
new put gets an id above every id ever handed out. The second test kills one follower, keeps the
load going, restarts it and waits until it has applied the leader's index with an equal digest.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from faultkit.checker import pair
from faultkit.client import Conn
from faultkit.cluster import Cluster
from faultkit.harness import random_seed
from faultkit.history import History
from faultkit.workload import Client

SEED = int(os.environ.get("BEANRAFT_FAULTS_SEED") or random_seed())
LONG_S = 300  # delays and TTRs that cannot run out during the test
PRIORITIES = (0, 7, 100, 1024, 2**31)

pytestmark = [pytest.mark.slow]


class Load:
    """Producers and workers that never kick or touch, so every state change is in the history."""

    def __init__(self, cluster: Cluster, history: History, seed: int):
        self.cluster, self.history, self.seed = cluster, history, seed
        self.stop = threading.Event()
        self.threads = []
        self.errors: list[BaseException] = []
        for node in cluster.nodes:
            for role in ("p", "w"):
                client = Client(f"{node.name}-{role}", node.name, node.spec.client, history, 10.0)
                rng = random.Random(f"{seed}/{client.name}")
                target = self._produce if role == "p" else self._work
                self.threads.append(threading.Thread(target=self._loop, args=(target, client, rng),
                                                     daemon=True))

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not self.errors, self.errors

    def _loop(self, step, client: Client, rng: random.Random) -> None:
        count = 0
        try:
            while not self.stop.is_set() and count < 5000:
                count += 1
                if step(client, rng, count) is None:
                    self.stop.wait(0.1)
                self.stop.wait(rng.uniform(0.002, 0.02))
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            client.close()  # without a crash, this is what returns its reserved jobs to ready

    def _produce(self, client: Client, rng: random.Random, count: int):
        pri = rng.choice(PRIORITIES)
        delay = LONG_S if rng.random() < 0.1 else 0
        body = f"{self.seed}.{client.name}.{count}." + "x" * rng.randint(1, 200)
        return client.op("put", f"put {pri} {delay} {LONG_S} {len(body)}",
                         {"body": body, "pri": pri, "delay": delay, "ttr": LONG_S}, body.encode())

    def _work(self, client: Client, rng: random.Random, count: int):
        result = client.op("reserve", "reserve-with-timeout 0", {"timeout": 0})
        if not result or result[0] != "ok":
            return result
        job_id, r = result[1]["id"], rng.random()
        pri = rng.choice(PRIORITIES)
        if r < 0.25:
            delay = LONG_S if rng.random() < 0.2 else 0
            return client.op("release", f"release {job_id} {pri} {delay}",
                             {"id": job_id, "pri": pri, "delay": delay})
        if r < 0.5:
            return client.op("bury", f"bury {job_id} {pri}", {"id": job_id, "pri": pri})
        if r < 0.75:
            return client.op("delete", f"delete {job_id}", {"id": job_id})
        return result  # keep holding it: reserved when the crash comes


# ------------------------------------------------------------------------------ the model


def allowed_outcomes(history: list[dict]) -> tuple[dict, dict, int]:
    """From the history: ({id: set of (state, pri) or "absent"}, {id: body}, highest id seen).

    Jobs of indefinite puts appear only if something showed their id. Reservations of one job
    are ordered by completion, which is their real order: a reservation is applied after the
    previous holder's release, which was invoked after that holder's own reservation returned.
    """
    ops = [o for o in pair(history) if o.f in ("put", "reserve", "release", "bury", "delete")]
    body_of, put_of = {}, {}
    for op in ops:
        if op.f == "put":
            put_of[op.args["body"]] = op
            if op.type == "ok":
                body_of[op.result["id"]] = op.args["body"]
        elif op.f == "reserve" and op.type == "ok":
            body_of[op.result["id"]] = op.result["body"]
    reserves: dict[int, list] = {}
    for op in ops:
        if op.f == "reserve" and op.type == "ok":
            reserves.setdefault(op.result["id"], []).append(op)
    by_conn: dict[int, list] = {}
    for op in ops:
        by_conn.setdefault(op.conn, []).append(op)
    allowed = {}
    for job_id, body in body_of.items():
        put = put_of[body]
        states = {("delayed" if put.args["delay"] else "ready", put.args["pri"])}
        if put.type != "ok":
            states.add("absent")
        for res in sorted(reserves.get(job_id, []), key=lambda o: o.t1):
            states = _episode(states, res, by_conn[res.conn])
        allowed[job_id] = states
    highest = max([o.result["id"] for o in ops if o.type == "ok" and "id" in o.result] + [0])
    return allowed, body_of, highest


def _episode(before: set, res, conn_ops: list) -> set:
    """The states after one reservation and what its holder did with the job."""
    ready = {s for s in before if s != "absent" and s[0] == "ready"}
    assert ready, f"job {res.result['id']} reserved while it could only be {before}"
    held = {("ready", pri) for _, pri in ready}  # a crash returns a reserved job to ready
    action = next((o for o in conn_ops if o.t0 > res.t0 and o.args.get("id") == res.result["id"]),
                  None)
    if action is None or action.type == "fail":
        return held
    if action.f == "release":
        state = "delayed" if action.args["delay"] else "ready"
        after = {(state, action.args["pri"])}
    elif action.f == "bury":
        after = {("buried", action.args["pri"])}
    else:
        after = {"absent"}
    return after if action.type == "ok" else after | held


def observe(conn: Conn, job_id: int) -> tuple[object, bytes | None]:
    """("absent", None) or ((state, pri), body) through peek and stats-job."""
    reply = conn.call(f"peek {job_id}")
    if reply[0] == "NOT_FOUND":
        return "absent", None
    assert reply[0] == "FOUND", reply
    stats = conn.stats(f"stats-job {job_id}")
    return (stats["state"], int(stats["pri"])), reply[2]


def kill_all(cluster: Cluster) -> None:
    """SIGKILL every node in one tight loop, then reap them."""
    for node in cluster.nodes:
        os.kill(node.pid, signal.SIGKILL)
    for node in cluster.nodes:
        node.kill()


def verify(cluster: Cluster, history: History) -> tuple[int, int]:
    """Check every job the history knows of (and no others); return (jobs checked, present)."""
    allowed, body_of, highest = allowed_outcomes(history.events)
    indefinite = {op.args["body"]: op for op in pair(history.events)
                  if op.f == "put" and op.type == "info"}
    conn = Conn(cluster.nodes[0].spec.client)
    present, problems = 0, []
    try:
        deadline = time.monotonic() + 20  # closed sessions release their jobs as they commit
        while int(conn.stats()["current-jobs-reserved"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for job_id in range(1, highest + 1):
            seen, body = observe(conn, job_id)
            if job_id not in allowed:
                put = indefinite.get(body.decode()) if body else None
                if put is not None:  # an indefinite put that happened; nobody reserved it
                    present += 1
                    state = "delayed" if put.args["delay"] else "ready"
                    if seen != (state, put.args["pri"]):
                        problems.append(f"job {job_id}: {seen}, put as {state} {put.args['pri']}")
                elif seen != "absent":
                    problems.append(f"job {job_id} exists ({seen}, {body!r}) but nobody put it")
                continue
            if seen != "absent":
                present += 1
                if body.decode() != body_of[job_id]:
                    problems.append(f"job {job_id}: body {body!r}, put {body_of[job_id]!r}")
            if seen not in allowed[job_id]:
                problems.append(f"job {job_id}: {seen}, allowed {sorted(map(str, allowed[job_id]))}")
        fresh = conn.call("put 0 0 10 5", b"fresh")
        assert fresh[0] == "INSERTED" and fresh[1] > highest, (fresh, highest)
        assert conn.call(f"delete {fresh[1]}") == ("DELETED",)
    finally:
        conn.close()
    if problems:
        path = Path(cluster.workdir) / "history.jsonl"
        history.save(path)
        pytest.fail(f"seed {SEED}, history in {path}:\n" + "\n".join(problems[:20]) + "\n"
                    + "\n".join(explain(history, int(p.split()[1].rstrip(":"))) for p in problems[:3]))
    return len(allowed), present


def explain(history: History, job_id: int) -> str:
    """The recorded operations on one job, for a failure message."""
    lines = [f"operations on job {job_id}:"]
    body = None
    for op in pair(history.events):
        if op.result.get("id") == job_id and op.f == "put":
            body = op.args["body"]
    for op in pair(history.events):
        if op.args.get("id") == job_id or op.result.get("id") == job_id or (
                body and op.args.get("body") == body):
            lines.append(f"  {op.t0:.4f}-{op.t1:.4f} {op.process} conn {op.conn} {op.f} "
                         f"{op.args} -> {op.type} {op.result}")
    return "\n".join(lines)


def converged_digests(cluster: Cluster) -> dict:
    docs = cluster.wait_converged(60)
    assert docs is not None, {n: (d or {}).get("digest_index") for n, d in cluster.statuses().items()}
    digests = {name: doc["digest"] for name, doc in docs.items()}
    assert len(set(digests.values())) == 1, digests
    return docs


# ------------------------------------------------------------------------------ tests


@pytest.fixture(params=["journal", "snapshots"])
def cluster(request, tmp_path_factory):
    """A loopback cluster; with ``snapshots`` it compacts every 100 entries, so restarts load a
    snapshot plus a journal tail and a lagging follower is sent a snapshot."""
    workdir = Path(tmp_path_factory.mktemp("durability"))
    options = ["--snapshot-entries", "100"] if request.param == "snapshots" else []
    with Cluster(workdir, layout="loopback", extra_options=options) as c:
        assert c.wait_ready(60), c.nodes[0].log_tail()
        yield c


@pytest.mark.timeout(240)
def test_kill_9_of_all_nodes_under_load_keeps_every_acknowledged_job(cluster):
    print(f"seed {SEED} (replay: BEANRAFT_FAULTS_SEED={SEED})")
    history = History()
    rng = random.Random(f"{SEED}/durability")
    for round_ in range(2):  # the second crash replays a journal that already survived one
        load = Load(cluster, history, SEED * 10 + round_).start()
        time.sleep(rng.uniform(2.0, 4.0))
        kill_all(cluster)
        load.finish()
        for node in cluster.nodes:
            node.start()
        assert cluster.wait_ready(60), [n.log_tail(2000) for n in cluster.nodes]
        checked, present = verify(cluster, history)
        print(f"round {round_ + 1}: {checked} jobs known from the history, {present} present")
        assert present > 20, "too little load to mean anything"
        converged_digests(cluster)


@pytest.mark.timeout(180)
def test_a_restarted_follower_catches_up_to_the_leaders_index_and_digest(cluster):
    history = History()
    load = Load(cluster, history, SEED).start()
    time.sleep(1.5)
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    left_at = follower.status()["applied_index"]
    follower.kill()
    time.sleep(3.0)  # the others keep committing without it
    missed = leader.status()["applied_index"] - left_at
    follower.start()
    time.sleep(1.0)
    load.finish()
    assert missed > 20, f"only {missed} entries committed while the follower was down"
    docs = converged_digests(cluster)  # the follower at the leader's index, with its digest
    assert docs[follower.name]["digest_index"] == docs[leader.name]["digest_index"] > left_at + missed
    assert cluster.wait_ready(30, [follower])
    verify(cluster, history)
