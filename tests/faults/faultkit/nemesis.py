"""The nemesis: one fault at a time, drawn from a seeded schedule, each healed before the next.

Kinds:
* ``kill``: kill -9 a node, then restart it (same flags, same -b directory).
* ``pause``: SIGSTOP a node, then SIGCONT.
* ``isolate``: cut a random node's raft links in both directions (netns layout only).
* ``isolate-leader``: the same for the node that is leader at that moment.
* ``pause-majority``: SIGSTOP two nodes (the cluster loses its quorum), then SIGCONT both.
* ``member``: a membership change with a kill -9 in the middle of it: ask one node to remove
  the drawn node, and kill -9 a third node a seeded moment (0-0.3 s) later. If the removal
  happened, the removed node is killed, its -b emptied, and the heal starts it with ``--join``
  and adds it back (``POST /admin/members``, retried); if it did not (refused for want of a
  majority, or lost with the leader), nothing is wiped. After the heal every node must list
  the same three members. What each step answered goes into ``observations``.
* ``disk``: fill a node's -b tmpfs with a filler file, then delete it (netns layout with tmpfs).
  While the disk is full the nemesis probes the node (a put and a ``stats`` read) and, after
  the heal, checks that the node takes a put again; what it saw goes into ``observations``.

The schedule (kinds, targets, durations, gaps) comes only from ``random.Random(f"{seed}/nemesis")``,
so a seed replays it exactly; the first faults cover every kind once, in a seeded order. Each
fault and heal is recorded in the history with ``nodes`` = the nodes whose sessions it may end.
After every heal the nemesis waits (bounded) until the cluster is ready again.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import urllib.error
import urllib.request

from .cluster import Cluster, NodeProcess
from .history import History
from .workload import Client

KINDS = ("kill", "pause", "isolate", "isolate-leader", "disk", "pause-majority", "member")
MEMBER_RETRIES = 20  # attempts to add a removed node back (each bounded by its own timeout)


class Nemesis(threading.Thread):
    def __init__(self, cluster: Cluster, history: History, seed: int, end: float,
                 kinds: tuple[str, ...] = KINDS, duration_s: tuple[float, float] = (2.5, 5.0),
                 gap_s: tuple[float, float] = (2.0, 4.0), max_faults: int = 1000,
                 ready_timeout_s: float = 40.0, op_timeout_s: float = 10.0):
        super().__init__(name="nemesis", daemon=True)
        self.cluster = cluster
        self.history = history
        self.rng = random.Random(f"{seed}/nemesis")
        self.end = end
        self.kinds = kinds
        self.duration_s = duration_s
        self.gap_s = gap_s
        self.max_faults = max_faults
        self.ready_timeout_s = ready_timeout_s
        self.op_timeout_s = op_timeout_s
        self.stop = threading.Event()
        self.observations: list[str] = []
        self.problems: list[str] = []
        self.faults = 0
        self.error: BaseException | None = None
        self._active: list[tuple[str, NodeProcess]] = []
        self._lock = threading.Lock()

    def schedule(self):
        """The endless seeded sequence of (kind, node index, duration, gap)."""
        first = list(self.kinds)
        self.rng.shuffle(first)
        n = len(self.cluster.nodes)
        while True:
            kind = first.pop(0) if first else self.rng.choice(self.kinds)
            yield (kind, self.rng.randrange(n), self.rng.uniform(*self.duration_s),
                   self.rng.uniform(*self.gap_s))

    def run(self) -> None:
        try:
            for kind, index, duration, gap in self.schedule():
                if self.stop.wait(gap) or time.monotonic() + duration > self.end:
                    return
                if self.faults >= self.max_faults:
                    return
                self.faults += 1
                node = self.cluster.nodes[index]
                if kind == "isolate-leader":
                    node = self.cluster.leader() or node
                if kind == "member":
                    self.change_membership(node)
                elif kind == "pause-majority":  # the node drawn is the one left running
                    for other in self.cluster.nodes:
                        if other is not node:
                            self.inject("pause", other)
                else:
                    self.inject(kind, node)
                self.stop.wait(duration)
                self.heal_all()
                if not self.cluster.wait_ready(self.ready_timeout_s):
                    self.problems.append(f"cluster not ready {self.ready_timeout_s:.0f} s after "
                                         f"healing {kind} of {node.name}")
                    with self._lock:
                        self.history.note("nemesis", "not-ready", {"kind": kind, "node": node.name})
                elif kind == "disk":
                    self.after_disk(node)
                elif kind == "member":
                    self.check_members()
        except BaseException as exc:  # reported by the harness
            self.error = exc
            self.heal_all()

    # -- faults ----------------------------------------------------------------------------

    def inject(self, kind: str, node: NodeProcess) -> None:
        value = {"kind": kind, "nodes": [node.name]}
        with self._lock:  # the harness may heal from another thread
            self.history.invoke("nemesis", "fault", value, node.name)
            if kind == "kill":
                node.kill()
            elif kind == "pause":
                node.pause()
            elif kind in ("isolate", "isolate-leader"):
                self.cluster.network.isolate(self.cluster.nodes.index(node))
            elif kind == "disk":
                self.cluster.fill_disk(node)
            self._active.append((kind, node))
            self.history.complete("nemesis", "ok", value)
        if kind == "disk":
            self.probe_full(node)

    def heal_all(self) -> None:
        """Undo every active fault (also used by the harness at the end). Idempotent."""
        with self._lock:
            active, self._active = self._active, []
            for kind, node in active:
                value = {"kind": kind, "nodes": [node.name]}
                self.history.invoke("nemesis", "heal", value, node.name)
                if kind == "kill":
                    node.start()
                elif kind == "pause":
                    node.resume()
                elif kind in ("isolate", "isolate-leader"):
                    self.cluster.network.heal()
                elif kind == "disk":
                    self.cluster.free_disk(node)
                elif kind == "rejoin":
                    self.rejoin(node)
                elif kind == "settle-member":
                    self.settle_member(node)
                self.history.complete("nemesis", "ok", value)

    # -- membership changes ----------------------------------------------------------------

    def _members_call(self, via: NodeProcess, doc: dict | None, timeout_s: float) -> dict:
        """GET (doc None) or POST /admin/members on ``via``; the JSON answer, errors included."""
        data = json.dumps(doc).encode() if doc is not None else None
        request = urllib.request.Request(
            f"http://{via.spec.http}/admin/members", data=data,
            headers={"Authorization": f"Bearer {self.cluster.admin_token}",
                     "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout_s) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            try:
                return json.loads(exc.read()) or {"error": f"HTTP {exc.code}"}
            except ValueError:
                return {"error": f"HTTP {exc.code}", "code": "http"}
        except (OSError, ValueError) as exc:
            return {"error": repr(exc), "code": "unreachable"}

    def _members(self, via: NodeProcess) -> list[str] | None:
        answer = self._members_call(via, None, 3.0)
        return answer.get("members") if answer.get("leader") else None

    def change_membership(self, node: NodeProcess) -> None:
        """Remove ``node`` through one node while a third is killed -9 mid-change."""
        others = [n for n in self.cluster.nodes if n is not node]
        self.rng.shuffle(others)
        asker, victim = others[0], others[1]
        delay = self.rng.uniform(0.0, 0.3)
        value = {"kind": "member", "nodes": [node.name, victim.name]}
        with self._lock:
            self.history.invoke("nemesis", "fault", value, node.name)
        answer: dict = {}
        thread = threading.Thread(target=lambda: answer.update(self._members_call(
            asker, {"action": "remove", "address": node.spec.raft, "timeout_s": 15.0}, 25.0)),
            daemon=True)
        thread.start()
        time.sleep(delay)
        with self._lock:
            victim.kill()
            self._active.append(("kill", victim))
            # The fault is under way from the kill on: a node that drops the victim from then
            # on is accounted for, however long the change itself takes to answer (a request
            # forwarded to a leader that died waits for its timeout).
            self.history.complete("nemesis", "ok", value)
        thread.join(timeout=30)
        # Did the removal happen? Ask the survivor until it knows a leader again (bounded).
        removed = None
        for _ in range(100):
            members = self._members(asker)
            if members is not None:
                removed = node.spec.raft not in members
                break
            time.sleep(0.2)
        said = answer.get("error") or f"removed, members {answer.get('members')}"
        self.observations.append(f"member: remove {node.name} via {asker.name}, kill -9 "
                                 f"{victim.name} after {delay:.2f} s: {said}; "
                                 f"removed={removed}")
        with self._lock:
            if removed:
                self._empty(node)
                self._active.append(("rejoin", node))
            elif removed is None:
                # No leader yet: the survivor and the victim (killed) may be the only members
                # if the removal was appended. Ask again once the victim is back (healed first).
                self._active.append(("settle-member", node))
            else:  # still a member: the change is over for it (the victim's heal is pending)
                value = {"kind": "member", "nodes": [node.name]}
                self.history.invoke("nemesis", "heal", value, node.name)
                self.history.complete("nemesis", "ok", value)

    def _empty(self, node: NodeProcess) -> None:
        """Stop a removed node and empty its data directory, so it can join afresh."""
        node.kill()
        for entry in node.spec.data_dir.iterdir():  # -b may be a tmpfs mount point
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def settle_member(self, node: NodeProcess, timeout_s: float = 30.0) -> None:
        """After a removal whose outcome was unknown while no node led: ask a member again
        (bounded) and, if ``node`` was removed after all, empty it and add it back."""
        others = [n for n in self.cluster.nodes if n is not node]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for other in others:
                members = self._members(other) if other.running() else None
                if members is not None:
                    removed = node.spec.raft not in members
                    self.observations.append(f"member: {node.name} removed={removed}, known "
                                             "once a leader was back")
                    if removed:
                        self._empty(node)
                        self.rejoin(node)
                    return
            time.sleep(0.2)
        self.problems.append(f"no leader within {timeout_s:.0f} s to tell whether {node.name} "
                             "was removed")

    def rejoin(self, node: NodeProcess) -> None:
        """Start a removed, emptied node with --join and add it back (retried, bounded)."""
        others = [n for n in self.cluster.nodes if n is not node]
        via = others[0]
        for _ in range(150):  # a member that answers (the other may be restarting): 30 s at most
            answering = [n for n in others if n.running() and self._members(n) is not None]
            if answering:
                via = answering[0]
                break
            time.sleep(0.2)
        args = list(node.extra_args)
        if "--join" in args:
            del args[args.index("--join"):args.index("--join") + 2]
        node.extra_args = [*args, "--join", via.spec.http]
        node.start()
        answer: dict = {}
        for attempt in range(1, MEMBER_RETRIES + 1):
            time.sleep(1.0)
            if not node.running():
                node.start()  # it gave up joining: try again
                continue
            answer = self._members_call(via, {"action": "add", "address": node.spec.raft,
                                              "timeout_s": 20.0}, 30.0)
            if "members" in answer or answer.get("code") == "already_member":
                self.observations.append(f"member: {node.name} added back (attempt {attempt})")
                return
        self.problems.append(f"{node.name} could not be added back: {answer}")

    def check_members(self, timeout_s: float = 30.0) -> None:
        """Every node lists the same members, all of the cluster's nodes."""
        want = sorted(n.spec.raft for n in self.cluster.nodes)
        deadline = time.monotonic() + timeout_s
        seen = {}
        while time.monotonic() < deadline:
            seen = {n.name: self._members(n) for n in self.cluster.nodes}
            if all(m == want for m in seen.values()):
                return
            time.sleep(0.5)
        self.problems.append(f"members did not converge to {want} within {timeout_s:.0f} s: {seen}")

    # -- disk-full probes ------------------------------------------------------------------

    def _probe_client(self, node: NodeProcess) -> Client:
        return Client(f"probe-{node.name}", node.name, node.spec.client, self.history,
                      self.op_timeout_s)

    def probe_full(self, node: NodeProcess) -> None:
        """With the disk full: does a put get OUT_OF_MEMORY, and does a read still answer?"""
        time.sleep(0.5)
        client = self._probe_client(node)
        body = f"probe.{node.name}.{self.faults}.t5.full"
        put = client.op("put", f"put 0 0 5 {len(body)}",
                        {"body": body, "pri": 0, "delay": 0, "ttr": 5}, body.encode())
        read = client.op("peek", "peek 1", {"id": 1})
        client.close()
        self.observations.append(
            f"disk full on {node.name}: put -> {_say(put)}; peek 1 -> {_say(read)}")

    def after_disk(self, node: NodeProcess, patience_s: float = 15.0) -> None:
        """After the filler is gone and the cluster is ready: how soon does the node take a put
        again? (Tried every 0.5 s for ``patience_s``.)"""
        client = self._probe_client(node)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            body = f"probe.{node.name}.{self.faults}.{attempt}.t5.healed"
            put = client.op("put", f"put 0 0 5 {len(body)}",
                            {"body": body, "pri": 0, "delay": 0, "ttr": 5}, body.encode())
            waited = time.monotonic() - started
            if (put and put[0] == "ok") or waited > patience_s:
                break
            time.sleep(0.5)
        client.close()
        self.observations.append(f"disk space back on {node.name}: put -> {_say(put)} "
                                 f"after {waited:.1f} s ({attempt} attempts)")
        if not put or put[0] != "ok":
            self.problems.append(f"{node.name} still refuses puts {patience_s:.0f} s after its "
                                 f"disk has space again: {_say(put)}")


def _say(result) -> str:
    if result is None:
        return "no connection"
    type_, value = result
    return f"{type_} {value.get('error') or value.get('id', '')}".strip()
