"""One fault-injection run: cluster, workload, nemesis, heal, drain, check.

``run(RunConfig(seed=..., seconds=...))`` prints its seed first, so any run can be replayed
with the same seed (``tests/tools/soak.py --seed N`` or ``BEANRAFT_FAULTS_SEED=N pytest``).
Steps:

1. Start 3 nodes (netns layout when root can have namespaces, else loopback with kill/pause
   only) and wait until they are ready.
2. For ``seconds``: producers and workers on every node, a status sampler (digest and
   digest_index of every node every ~0.5 s), and the nemesis.
3. Stop the nemesis, heal everything, stop the clients (each closes its connection), wait
   until all nodes are ready.
4. Drain through one node: kick buried and delayed jobs, reserve and delete everything, until
   the cluster holds no job (bounded by the longest TTR plus the commit timeout).
5. Wait until every node has applied the same index and record their digests, then run the
   checker. The history, the report and the nodes' logs stay in the work directory.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import random
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import netns
from .checker import Report, check, fault_windows
from .cluster import Cluster
from .history import History
from .nemesis import KINDS, Nemesis
from .workload import TTRS, Client, Process, Shared


@dataclass
class RunConfig:
    seed: int
    seconds: float = 60.0
    workdir: Path | None = None
    layout: str = "auto"  # auto | netns | loopback
    kinds: tuple[str, ...] = KINDS
    producers_per_node: int = 1
    workers_per_node: int = 2
    commit_timeout_s: float = 5.0
    node_grace_s: float = 3.0
    # Long enough, at the top, for a leader to declare a silent node dead (which takes about
    # twice --node-grace) and release its clients' jobs.
    fault_duration_s: tuple[float, float] = (2.5, 8.0)
    fault_gap_s: tuple[float, float] = (2.0, 4.0)
    tmpfs_mb: int = 256
    keep_workdir: bool = False


@dataclass
class RunResult:
    config: RunConfig
    report: Report
    layout: str
    problems: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    faults: int = 0
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.report.valid and not self.problems

    def summary(self) -> str:
        lines = [f"seed {self.config.seed}: {'OK' if self.ok else 'FAILED'} "
                 f"({self.layout} layout, {self.faults} faults, workdir {self.workdir})"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  observed: {o}" for o in self.observations]
        lines.append(self.report.summary())
        return "\n".join(lines)


def choose_layout(wanted: str, kinds: tuple[str, ...]) -> tuple[str, tuple[str, ...], str | None]:
    """(layout, kinds it supports, why netns was not used)."""
    why = None
    if wanted in ("auto", "netns"):
        why = netns.unavailable_reason()
        if why is None:
            return "netns", kinds, None
        if wanted == "netns":
            raise netns.NetnsUnavailable(why)
    # Without namespaces there is no partition and no tmpfs: SIGSTOP is the only isolation.
    loopback_kinds = ("kill", "pause", "pause-majority", "member")
    return "loopback", tuple(k for k in kinds if k in loopback_kinds), why


class Sampler(threading.Thread):
    """Records every node's /status digest about twice a second."""

    def __init__(self, cluster: Cluster, history: History, stop: threading.Event):
        super().__init__(name="sampler", daemon=True)
        self.cluster, self.history, self.stop = cluster, history, stop

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for node in self.cluster.nodes:
                if node.running() and not node.stopped:
                    record_status(self.history, node, "status")


def record_status(history: History, node, f: str) -> dict | None:
    doc = node.status(digest=True)
    if doc and "digest" in doc:
        history.note("sampler", f, {k: doc.get(k) for k in (
            "digest", "digest_index", "role", "term", "leader", "commit_index", "jobs")},
            node.name)
    return doc


def run(config: RunConfig) -> RunResult:
    """Run once (see the module docstring). Always tears the cluster and network down."""
    layout, kinds, why = choose_layout(config.layout, config.kinds)
    print(f"[faults] seed {config.seed}, {config.seconds:.0f} s, {layout} layout, kinds "
          f"{','.join(kinds)}" + (f" (no netns: {why})" if why else ""), flush=True)
    if layout == "netns":
        netns.sweep_stale()
        sweep_stale_mounts()
    workdir = Path(config.workdir or f"/tmp/beanraft-faults-{config.seed}-{os.getpid()}")
    if workdir.exists():
        shutil.rmtree(workdir)
    cluster = Cluster(workdir, layout=layout, commit_timeout_s=config.commit_timeout_s,
                      node_grace_s=config.node_grace_s,
                      tmpfs_mb=config.tmpfs_mb if "disk" in kinds else None)
    history = History()
    result = None
    try:
        cluster.create()
        result = _run(config, cluster, history, layout, kinds)
        result.workdir = workdir
        return result
    finally:
        if result is None or not result.ok:
            cluster.post_mortem()
        cluster.close()
        history.save(workdir / "history.jsonl")
        if result is not None:
            (workdir / "report.txt").write_text(result.summary() + "\n")
            if result.ok and not config.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
                result.workdir = None
        print(f"[faults] seed {config.seed} done; replay with --seed {config.seed}", flush=True)


def _run(config: RunConfig, cluster: Cluster, history: History, layout: str,
         kinds: tuple[str, ...]) -> RunResult:
    op_timeout_s = config.commit_timeout_s + 6.0
    margin = config.commit_timeout_s + config.node_grace_s + 5.0
    settings = {k: v for k, v in asdict(config).items() if k not in ("workdir",)}
    history.note("harness", "config", {**settings, "layout": layout, "kinds": list(kinds),
                                       "owner_loss_margin_s": margin, "code": code_version()})
    problems: list[str] = []
    if not cluster.wait_ready(60):
        raise RuntimeError("the cluster did not become ready: " + cluster.nodes[0].log_tail())
    stop = threading.Event()
    end = time.monotonic() + config.seconds
    processes = _clients(config, cluster, history, op_timeout_s, end, stop)
    sampler = Sampler(cluster, history, stop)
    nemesis = Nemesis(cluster, history, config.seed, end, kinds, config.fault_duration_s,
                      config.fault_gap_s, op_timeout_s=op_timeout_s)
    for thread in [sampler, nemesis, *processes]:
        thread.start()
    nemesis.join(timeout=config.seconds + 120)
    nemesis.stop.set()
    nemesis.heal_all()
    stop.set()
    for process in processes:
        process.join(timeout=op_timeout_s + max(TTRS) + 10)
        if process.is_alive() or process.error:
            problems.append(f"client {process.name}: {process.error or 'did not stop'}")
    sampler.join(timeout=5)
    if nemesis.error:
        problems.append(f"nemesis failed: {nemesis.error!r}")
    problems += nemesis.problems
    if not cluster.wait_ready(60):
        problems.append("cluster not ready 60 s after the final heal")
    problems += drain(cluster, history, config, op_timeout_s)
    problems += final_statuses(cluster, history)
    problems += record_drops(cluster, history, config.node_grace_s)
    problems += one_leader_per_term(history.events)
    problems += applied_entries_cut(cluster)
    report = check(history.events)
    return RunResult(config=config, report=report, layout=layout, problems=problems,
                     observations=nemesis.observations + scan_logs(cluster),
                     faults=nemesis.faults)


def _clients(config: RunConfig, cluster: Cluster, history: History, op_timeout_s: float,
             end: float, stop: threading.Event) -> list[Process]:
    """The producers and workers of every node (named node1-p0, node1-w0, ...)."""
    shared = Shared()
    processes = []
    for node in cluster.nodes:
        for kind, count in (("producer", config.producers_per_node),
                            ("worker", config.workers_per_node)):
            for i in range(count):
                client = Client(f"{node.name}-{kind[0]}{i}", node.name, node.spec.client, history,
                                op_timeout_s)
                processes.append(Process(kind, client, config.seed, end, stop, shared))
    return processes


_DROP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING beanraft\.node: "
                   r"node (\S+) unreachable")


def _log_lines(cluster: Cluster):
    """(node, the lines of its log) for every node that has written a log."""
    for node in cluster.nodes:
        try:
            yield node, node.spec.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue


def record_drops(cluster: Cluster, history: History, grace_s: float) -> list[str]:
    """Put every DROP_NODE a leader proposed (from its log) into the history as a zero-length
    ``dropped`` fault on that node, so the checker counts it as a possible owner loss; return
    the drops of nodes that no fault had touched in the grace period before (spurious ones)."""
    windows = fault_windows((e["f"], e["value"].get("nodes", []), e["time"], e["time"])
                            for e in history.events if e["process"] == "nemesis"
                            and e["type"] == "ok" and e["f"] in ("fault", "heal"))
    spurious = []
    for node, lines in _log_lines(cluster):
        for line in lines:
            match = _DROP.match(line)
            target = cluster.by_raft(match.group(2)) if match else None
            if target is None:
                continue
            at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            value = {"kind": "dropped", "nodes": [target.name], "by": node.name}
            history.note("nemesis", "fault", value, target.name, at=at)
            history.note("nemesis", "heal", value, target.name, at=at)
            if not any(start - 1.0 <= at and at <= stop + grace_s + 5.0
                       for start, stop in windows.get(target.name, ())):
                spurious.append(f"{node.name} dropped {target.name} at "
                                f"{time.strftime('%H:%M:%S', time.localtime(at))} although no "
                                f"fault had touched it")
    return spurious


def applied_entries_cut(cluster: Cluster) -> list[str]:
    """A follower cuts an entry it applied only where its log differed from its leader's
    (``glue.truncate_only_on_conflict``): two nodes applied different entries at one index."""
    return [f"{node.name} cut entries it had applied: {line[:200]}"
            for node, lines in _log_lines(cluster) for line in lines
            if "truncating already-applied log entries" in line]


def scan_logs(cluster: Cluster, limit: int = 3) -> list[str]:
    """Noteworthy lines of the nodes' logs: CRITICAL, ERROR and tracebacks (first few each)."""
    notes = []
    for node, lines in _log_lines(cluster):
        marked = [l for l in lines if " CRITICAL " in l or " ERROR " in l or l.startswith("Traceback")]
        for line in marked[:limit]:
            notes.append(f"{node.name} log: {line[:300]}")
        if len(marked) > limit:
            notes.append(f"{node.name} log: ... {len(marked) - limit} more such lines")
    return notes


def drain(cluster: Cluster, history: History, config: RunConfig, op_timeout_s: float) -> list[str]:
    """Empty the cluster through its first node, recording every operation (process ``drain``)."""
    node = cluster.nodes[0]
    client = Client("drain", node.name, node.spec.client, history, op_timeout_s)
    deadline = time.monotonic() + max(TTRS) + config.commit_timeout_s + 60
    counts: dict = {}
    try:
        while time.monotonic() < deadline:
            if not client.connected():
                time.sleep(0.5)
                continue
            try:
                stats = client.conn.stats()
            except Exception:
                client.conn = None
                continue
            counts = {k: int(stats.get(f"current-jobs-{k}", 0))
                      for k in ("ready", "reserved", "delayed", "buried")}
            if not any(counts.values()):
                return []
            if counts["buried"] or counts["delayed"]:
                client.op("kick", "kick 1000000", {"bound": 1000000})
            result = client.op("reserve", "reserve-with-timeout 1", {"timeout": 1}, wait_s=1)
            if result and result[0] == "ok":
                job_id = result[1]["id"]
                client.op("delete", f"delete {job_id}", {"id": job_id})
        return [f"drain incomplete: jobs left {counts}"]
    finally:
        client.close()


def final_statuses(cluster: Cluster, history: History) -> list[str]:
    """Record every node's digest once all have applied the same index."""
    docs = cluster.wait_converged(30)
    if docs is None:
        return ["nodes did not reach the same applied index within 30 s: " + json.dumps(
            {n: (d or {}).get("digest_index") for n, d in cluster.statuses().items()})]
    problems = []
    for node in cluster.nodes:
        doc = docs[node.name]
        history.note("sampler", "final-status", {k: doc.get(k) for k in (
            "digest", "digest_index", "role", "term", "leader", "commit_index", "jobs")}, node.name)
        if any(doc.get("jobs", {}).values()):
            problems.append(f"{node.name} still counts jobs after the drain: {doc['jobs']}")
    return problems


def one_leader_per_term(events: list[dict]) -> list[str]:
    """Raft's election safety, from the sampled /status documents: at most one node says it is
    leader in any one term (membership changes included)."""
    leaders: dict[int, set[str]] = {}
    for event in events:
        value = event.get("value") or {}
        if event.get("process") == "sampler" and value.get("role") == "leader":
            leaders.setdefault(value.get("term"), set()).add(event.get("node"))
    return [f"two leaders in term {term}: {sorted(names)}"
            for term, names in sorted(leaders.items()) if len(names) > 1]


def sweep_stale_mounts() -> list[str]:
    """Unmount the tmpfs data directories of runs whose process no longer exists (killed -9)."""
    import subprocess

    stale = []
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            match = re.match(r"^/tmp/beanraft-faults-\d+-(\d+)/n\d+/data$", fields[1])
            if fields[0] == "tmpfs" and match and not os.path.exists(f"/proc/{match.group(1)}"):
                subprocess.run(["umount", "-l", fields[1]], capture_output=True)
                stale.append(fields[1])
    return stale


def code_version() -> str:
    """``git describe`` of the tree the nodes were copied from (best effort)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def random_seed() -> int:
    return random.SystemRandom().randrange(1, 2**31)
