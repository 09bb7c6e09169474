"""Goal: the membership changes at runtime while a producer and a worker keep working: grow 1 -> 3
-> 5, shrink 5 -> 3 by removing the leader and a follower, replace a node by one at a new address;
nothing acknowledged is lost and no job is run twice; a second change while one is pending and a
removal that would leave no majority are refused with their own exit status; after every member
restarts (with its original, now stale, command line) the cluster has the members it last agreed on.

Method: one real cluster grown from a single ``beanraft serve`` started with --raft, the cluster
secret and an admin token; each new node is started with ``--join`` and added with the real
``beanraft member add`` (the commands of docs/how-to/grow-the-cluster.md, shrink-the-cluster.md
and replace-a-node.md, in the form those pages show). A removed node is stopped at once (as the
pages say). The load: ``beanraft.client`` producer and worker threads that fail over between all
the addresses the test will ever use. At the end the queue is drained and every acknowledged put
must have been reserved and deleted exactly once.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

from cluster_harness import (HOST, Cluster, NodePorts, NodeProcess, beanraft_argv, clean_env,
                             free_ports, wait_for)

from beanraft.client import Client
from beanraft.client.errors import TimedOutError

TOKEN = "membership-token-0123456789"
LOAD_LIMIT = 20_000  # puts, a bound beside the time the test runs
EXIT_TIMEOUT, EXIT_BUSY, EXIT_NO_MAJORITY = 11, 12, 13


class Load:
    """A producer and a worker (threads), each a failover client over every address."""

    def __init__(self, addresses: list[str]):
        self.addresses = addresses
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.reserved: dict[str, int] = {}
        self.deleted: dict[str, int] = {}
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._produce, daemon=True),
                         threading.Thread(target=self._work, daemon=True)]

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def _produce(self) -> None:
        with Client(self.addresses, timeout=5, failover_timeout=60) as client:
            for i in range(LOAD_LIMIT):
                if self.stop.is_set():
                    return
                body = f"job-{i}"
                try:
                    client.put(body, ttr=120)
                except Exception as exc:  # an application-visible error
                    self.errors.append(f"put {body}: {exc!r}")
                    return
                self.acked.append(body)
                time.sleep(0.005)

    def _work(self, drain_until: float | None = None) -> None:
        with Client(self.addresses, timeout=5, failover_timeout=60) as client:
            while True:
                if drain_until is None and self.stop.is_set():
                    return
                if drain_until is not None and time.monotonic() > drain_until:
                    return
                try:
                    job = client.reserve(timeout=1)
                except TimedOutError:
                    if drain_until is not None and len(self.deleted) >= len(self.acked):
                        return
                    continue
                except Exception as exc:
                    self.errors.append(f"reserve: {exc!r}")
                    return
                self.reserved[job.body] = self.reserved.get(job.body, 0) + 1
                try:
                    client.delete(job)
                except Exception as exc:
                    self.errors.append(f"delete {job.body}: {exc!r}")
                    return
                self.deleted[job.body] = self.deleted.get(job.body, 0) + 1

    def finish(self, timeout_s: float = 60.0) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._work(drain_until=time.monotonic() + timeout_s)


def member(node: NodeProcess, token_file, *args: str) -> subprocess.CompletedProcess:
    """``beanraft member ARGS --http NODE --admin-token-file FILE``, as the how-to pages show."""
    return subprocess.run([*beanraft_argv(), "member", *args, "--http", node.http_address,
                           "--admin-token-file", str(token_file)],
                          capture_output=True, text=True, env=clean_env(), timeout=120)


def members_of(node: NodeProcess) -> list[str]:
    done = subprocess.run([*beanraft_argv(), "member", "list", "--http", node.http_address,
                           "--json"], capture_output=True, text=True, timeout=30,
                          env=clean_env(BEANRAFT_ADMIN_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["members"]


def test_grow_shrink_replace_and_restart_under_load(tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    # Small snapshots: new members get a snapshot, then the log, and after a restart the early
    # membership entries are no longer in any journal (only members.json remembers them).
    flags = ("--admin-token-file", str(token_file), "--snapshot-entries", "200")
    seed = Cluster(tmp_path, size=1, extra_args=flags)
    ports = free_ports(3 * 5)
    spares = [NodePorts(*ports[3 * i: 3 * i + 3]) for i in range(5)]
    nodes: dict[str, NodeProcess] = {}
    load = None
    try:
        seed.start()
        n1 = seed.nodes[0]
        nodes["node1"] = n1
        env = clean_env(BEANRAFT_CLUSTER_SECRET=seed.secret)
        for i, p in enumerate(spares, start=2):
            # Started like docs/how-to/grow-the-cluster.md: no --peer, --join any member.
            nodes[f"node{i}"] = NodeProcess(f"node{i}", p, [], tmp_path, env,
                                            flags + ("--join", n1.http_address))
        addresses = [f"{HOST}:{n.ports.client}" for n in nodes.values()]
        load = Load(addresses).start()
        wait_for("the load to start", lambda: len(load.acked) > 20, 30)

        def grow(name: str, ask: NodeProcess) -> None:
            node = nodes[name]
            node.start()
            # As the how-to says: the new node answers on its HTTP port, then it is added.
            wait_for(f"{name} to answer", lambda: node.http("/healthz")[0] == 200, 60)
            done = member(ask, token_file, "add", node.raft_address)
            assert done.returncode == 0, done.stderr + node.log_text(3000)
            assert done.stdout.startswith(f"added {node.raft_address} in ")

        # Grow 1 -> 3 -> 5, each asked on another node.
        for name in ("node2", "node3", "node4", "node5"):
            grow(name, n1 if name in ("node2", "node4") else nodes["node2"])
        five = sorted(n.raft_address for n in nodes.values() if n.running)
        assert len(five) == 5
        wait_for("every node to list the five members",
                 lambda: all(members_of(n) == five for n in nodes.values() if n.running), 30)
        listed = subprocess.run([*beanraft_argv(), "member", "list", "--http",
                                 nodes["node3"].http_address, "--admin-token-file",
                                 str(token_file)], capture_output=True, text=True,
                                env=clean_env(), timeout=30)
        lines = listed.stdout.splitlines()
        assert lines[-1].startswith("last change: add "), listed.stdout
        lines = lines[:-1]
        assert sorted(line.split()[0] for line in lines) == five, listed.stdout
        assert sum(line.endswith("  leader") for line in lines) == 1, listed.stdout

        # Shrink 5 -> 3: remove the leader (asked on itself: it hands over first), then a follower.
        leader = nodes[_leader_name(nodes)]
        done = member(leader, token_file, "remove", leader.raft_address)
        assert done.returncode == 0, done.stderr
        leader.stop()
        running = [n for n in nodes.values() if n.running]
        new_leader = nodes[_leader_name(nodes)]
        assert new_leader is not leader
        follower = next(n for n in running if n is not new_leader)
        done = member(running[-1] if running[-1] is not follower else new_leader, token_file,
                      "remove", follower.raft_address)
        assert done.returncode == 0, done.stderr
        follower.stop()
        three = sorted(n.raft_address for n in nodes.values() if n.running)
        assert len(three) == 3
        wait_for("every node to list the three members",
                 lambda: all(members_of(n) == three for n in nodes.values() if n.running), 30)

        # Replace a follower by node6 at a new address: add the new one, then remove the old.
        nodes["node6"] = NodeProcess("node6", spares[-1], [], tmp_path, env,
                                     flags + ("--join", new_leader.http_address))
        old = next(n for n in nodes.values() if n.running and n is not nodes[_leader_name(nodes)])
        grow("node6", old)
        done = member(nodes["node6"], token_file, "remove", old.raft_address)
        assert done.returncode == 0, done.stderr
        old.stop()
        final = sorted(n.raft_address for n in nodes.values() if n.running)
        assert len(final) == 3 and nodes["node6"].raft_address in final

        # One change at a time: an addition that cannot catch up is refused a second change while
        # it waits, and is abandoned on its timeout with the members unchanged.
        # The "node" is a bare listening socket: it answers a connection, never a Raft message.
        stuck = socket.create_server((HOST, free_ports(1)[0]))
        ghost = f"{HOST}:{stuck.getsockname()[1]}"
        asked = nodes["node6"]
        adding = subprocess.Popen([*beanraft_argv(), "member", "add", ghost, "--http",
                                   asked.http_address, "--admin-token-file", str(token_file),
                                   "--timeout", "8"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=clean_env())
        try:
            wait_for("the addition to be pending", lambda: (json.loads(member(
                asked, token_file, "list", "--json").stdout).get("pending") or {}).get(
                    "address") == ghost, 30)
            # (Asked about the ghost: should the addition end first, nothing is removed.)
            busy = member(asked, token_file, "remove", ghost)
            assert busy.returncode == EXIT_BUSY, busy.stderr
            assert f"a membership change is in progress (adding {ghost}, catching up" \
                in busy.stderr
            _out, err = adding.communicate(timeout=60)
        finally:
            if adding.poll() is None:
                adding.kill()
                adding.communicate()
        assert adding.returncode == EXIT_TIMEOUT, err
        assert "the addition is abandoned and the members are unchanged" in err
        assert members_of(asked) == final
        stuck.close()

        # A removal that would leave no majority is refused unless forced.
        lead = nodes[_leader_name(nodes)]
        paused, other = [n for n in nodes.values() if n.running and n is not lead]
        paused.signal(signal.SIGSTOP)
        try:
            # The leader counts a member it heard from in the last 2 s: wait until it has not.
            wait_for("the leader to miss the paused node", lambda: any(
                p["address"] == paused.raft_address and (p["silent_s"] or 0) > 2.5
                for p in (lead.status() or {}).get("peers", [])), 30)
            refused = member(lead, token_file, "remove", other.raft_address)
            assert refused.returncode == EXIT_NO_MAJORITY, refused.stderr
            assert "could not commit" in refused.stderr
        finally:
            paused.signal(signal.SIGCONT)
        assert members_of(lead) == final

        load.finish()
        assert not load.errors, load.errors[:5]
        assert len(load.acked) > 100
        lost = [b for b in load.acked if b not in load.deleted]
        assert not lost, f"{len(lost)} acknowledged jobs never delivered: {lost[:5]}"
        twice = {b: c for b, c in load.reserved.items() if c > 1}
        assert not twice, f"jobs run twice: {list(twice.items())[:5]}"
        load = None

        # Every member restarts with its first command line (--join, no --peer): the members file
        # decides, and the cluster has the three members it last agreed on.
        members_now = [n for n in nodes.values() if n.running]
        for node in members_now:
            node.stop()
        for node in members_now:
            node.start()
        seed.wait_ready(members_now, timeout_s=60)
        for node in members_now:
            assert members_of(node) == final
        wait_for("a leader among the members", lambda: _leader_name(nodes), 30)
    except BaseException:
        for node in nodes.values():  # the report of a failure carries every node's log
            print(f"===== {node.name} raft {node.raft_address} =====\n{node.log_text(6000)}")
        raise
    finally:
        if load is not None:
            load.stop.set()
        for node in nodes.values():
            node.stop()
        seed.stop()


def _leader_name(nodes: dict[str, NodeProcess]) -> str | None:
    """The name of the node every running node names leader (waits for agreement)."""

    def agreed():
        docs = {name: n.status() for name, n in nodes.items() if n.running}
        leaders = {d["leader"] for d in docs.values() if d}
        if len(leaders) != 1 or None in leaders or any(d is None for d in docs.values()):
            return None
        address = leaders.pop()
        return next((name for name, n in nodes.items() if n.raft_address == address), None)

    return wait_for("the running nodes to agree on a leader", agreed, 30)
