"""Producers and workers written against beanraft.client, on a cluster that a nemesis hurts.

``run(seed, seconds, flavour)`` starts three real nodes (faultkit's loopback cluster), three
producers and three workers (``Client`` threads, or ``AsyncClient`` tasks for flavour
"async"), each given all three addresses, and a seeded nemesis that every ~3 s kill -9s or
SIGSTOPs the leader or any node and restarts/continues it 1.5-3 s later. Then the producers
stop, the workers drain the tube, and the outcome is checked:

* no exception reached application code (``TimedOutError`` of ``reserve(timeout=1)`` is the
  API's own answer for "no job yet", not an error);
* every acknowledged put was deleted by a worker exactly once;
* no body was reserved twice; no duplicate job (a body under two ids);
* nothing is left in the cluster at the end.

It also returns the application-visible pause of every call during which its client failed
over. The long run is a command::

    .venv/bin/python tests/client/client_faults.py --seconds 60 --seeds 1 2 3 4 5 [--async]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))

from faultkit.cluster import Cluster  # noqa: E402

from beanraft import client as bc  # noqa: E402

TUBE = "app"
TTR_S = 60  # longer than any fault: a job runs twice only if the client's session is lost
NODE_GRACE_S = 6.0  # how long a silent node's sessions wait to be resumed elsewhere
DRAIN_S = 60.0


@dataclass
class Outcome:
    seed: int
    flavour: str
    acked: dict[str, int] = field(default_factory=dict)  # body -> id from INSERTED
    reserved: Counter = field(default_factory=Counter)  # body -> times reserved
    ids_of: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    deleted: Counter = field(default_factory=Counter)  # body -> times deleted
    errors: list[str] = field(default_factory=list)  # exceptions that reached the application
    pauses: list[float] = field(default_factory=list)  # seconds of calls that spanned a failover
    faults: list[str] = field(default_factory=list)
    left: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problems(self) -> list[str]:
        found = [f"exception in application code: {e}" for e in self.errors[:10]]
        for body, job_id in self.acked.items():
            if self.deleted[body] != 1:
                found.append(f"{body} (id {job_id}) deleted {self.deleted[body]} times")
        found += [f"{b} reserved {n} times" for b, n in self.reserved.items() if n > 1]
        found += [f"{b} exists as jobs {sorted(ids)}" for b, ids in self.ids_of.items()
                  if len(ids) > 1]
        found += [f"{b} was never put" for b in self.reserved if b not in self.acked]
        if self.left:
            found.append(f"left in the cluster: {self.left}")
        return found

    def summary(self) -> str:
        pauses = sorted(self.pauses)
        p50 = pauses[len(pauses) // 2] if pauses else 0.0
        return (f"seed {self.seed} {self.flavour}: {len(self.acked)} puts acknowledged, "
                f"{sum(self.deleted.values())} deletes, {len(self.faults)} faults "
                f"({', '.join(self.faults)}); {len(pauses)} failover pauses, "
                f"p50 {p50:.2f} s, max {max(pauses, default=0):.2f} s")


class Nemesis(threading.Thread):
    """One fault at a time: kill -9 or SIGSTOP of the leader or a random node, then heal."""

    def __init__(self, cluster: Cluster, seed: int, end: float, outcome: Outcome):
        super().__init__(name="nemesis", daemon=True)
        self.cluster, self.rng, self.end, self.outcome = cluster, random.Random(seed), end, outcome
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                gap, duration = self.rng.uniform(1.5, 2.5), self.rng.uniform(1.0, 2.5)
                kind = self.rng.choice(("kill", "pause"))
                on_leader = self.rng.random() < 0.5
                index = self.rng.randrange(len(self.cluster.nodes))
                time.sleep(gap)
                if time.monotonic() + duration > self.end:
                    return
                node = (self.cluster.leader() if on_leader else None) or self.cluster.nodes[index]
                self.outcome.faults.append(f"{kind} {node.name}{' (leader)' if on_leader else ''}")
                node.kill() if kind == "kill" else node.pause()
                time.sleep(duration)
                node.start() if kind == "kill" else node.resume()
                if not self.cluster.wait_ready(40.0):
                    raise RuntimeError(f"cluster not ready 40 s after healing {kind} {node.name}")
        except BaseException as error:
            self.error = error


# ------------------------------------------------------------------------- the application


def timed(outcome: Outcome, client, started: float, failovers_before: int) -> None:
    if client.failovers != failovers_before:
        with outcome.lock:
            outcome.pauses.append(time.monotonic() - started)


def producer(addresses, name: str, outcome: Outcome, stop: threading.Event) -> None:
    try:
        with bc.Client(addresses, use=TUBE, failover_timeout=30) as client:
            for n in range(100_000):
                if stop.is_set():
                    return
                body = f"{name}-{n}"
                started, before = time.monotonic(), client.failovers
                job_id = client.put(body, ttr=TTR_S)
                timed(outcome, client, started, before)
                with outcome.lock:
                    outcome.acked[body] = job_id
                time.sleep(0.01)
    except Exception as error:
        outcome.errors.append(f"{name}: {error!r}")


def handle(outcome: Outcome, job) -> None:
    with outcome.lock:
        outcome.reserved[job.body] += 1
        outcome.ids_of[job.body].add(job.id)


def worker(addresses, name: str, outcome: Outcome, done: threading.Event) -> None:
    try:
        with bc.Client(addresses, watch=TUBE, failover_timeout=30) as client:
            while not done.is_set():
                started, before = time.monotonic(), client.failovers
                try:
                    job = client.reserve(timeout=1)
                except bc.TimedOutError:
                    continue
                timed(outcome, client, started, before)
                handle(outcome, job)
                started, before = time.monotonic(), client.failovers
                job.delete()
                timed(outcome, client, started, before)
                with outcome.lock:
                    outcome.deleted[job.body] += 1
    except Exception as error:
        outcome.errors.append(f"{name}: {error!r}")


async def async_app(addresses, outcome: Outcome, stop: threading.Event, done: threading.Event):
    async def produce(name: str) -> None:
        async with bc.AsyncClient(addresses, use=TUBE, failover_timeout=30) as client:
            for n in range(100_000):
                if stop.is_set():
                    return
                body = f"{name}-{n}"
                started, before = time.monotonic(), client.failovers
                job_id = await client.put(body, ttr=TTR_S)
                timed(outcome, client, started, before)
                outcome.acked[body] = job_id
                await asyncio.sleep(0.01)

    async def work(name: str) -> None:
        async with bc.AsyncClient(addresses, watch=TUBE, failover_timeout=30) as client:
            while not done.is_set():
                started, before = time.monotonic(), client.failovers
                try:
                    job = await client.reserve(timeout=1)
                except bc.TimedOutError:
                    continue
                timed(outcome, client, started, before)
                handle(outcome, job)
                started, before = time.monotonic(), client.failovers
                await job.delete()
                timed(outcome, client, started, before)
                outcome.deleted[job.body] += 1

    async def guarded(name: str, coroutine) -> None:
        try:
            await coroutine
        except Exception as error:
            outcome.errors.append(f"{name}: {error!r}")

    await asyncio.gather(*(guarded(f"p{i}", produce(f"p{i}")) for i in range(3)),
                         *(guarded(f"w{i}", work(f"w{i}")) for i in range(3)))


# ------------------------------------------------------------------------- one run


def drained(outcome: Outcome) -> bool:
    with outcome.lock:
        return all(outcome.deleted[body] for body in outcome.acked)


def run(seed: int, seconds: float, workdir: Path, flavour: str = "blocking") -> Outcome:
    outcome = Outcome(seed, flavour)
    cluster = Cluster(workdir, layout="loopback", commit_timeout_s=5.0,
                      node_grace_s=NODE_GRACE_S, freeze=False)
    stop, done = threading.Event(), threading.Event()
    try:
        cluster.create()
        if not cluster.wait_ready(60.0):
            raise RuntimeError("cluster not ready")
        addresses = [(n.spec.host, n.spec.client_port) for n in cluster.nodes]
        end = time.monotonic() + seconds
        nemesis = Nemesis(cluster, seed, end, outcome)
        if flavour == "async":
            threads = [threading.Thread(target=asyncio.run,
                                        args=(async_app(addresses, outcome, stop, done),))]
        else:
            threads = [threading.Thread(target=producer, args=(addresses, f"p{i}", outcome, stop))
                       for i in range(3)]
            threads += [threading.Thread(target=worker, args=(addresses, f"w{i}", outcome, done))
                        for i in range(3)]
        for thread in threads + [nemesis]:
            thread.start()
        nemesis.join(timeout=seconds + 90)
        stop.set()
        if nemesis.error is not None:
            outcome.errors.append(f"nemesis: {nemesis.error!r}")
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and not drained(outcome) and not outcome.errors:
            time.sleep(0.2)
        time.sleep(1.5)  # a worker's last reserve(timeout=1) ends
        done.set()
        for thread in threads:
            thread.join(timeout=60)
        with bc.Client(addresses, failover_timeout=30) as checker:
            try:
                stats = checker.stats_tube(TUBE)
                left = {k: v for k, v in stats.items() if k.startswith("current-jobs") and v}
            except bc.NotFoundError:
                left = {}
        outcome.left = left
    finally:
        stop.set()
        done.set()
        cluster.close()
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--async", dest="flavour", action="store_const", const="async",
                        default="blocking")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/beanraft-client-faults"))
    args = parser.parse_args()
    failed = 0
    for seed in args.seeds:
        outcome = run(seed, args.seconds, args.workdir / f"seed{seed}", args.flavour)
        problems = outcome.problems()
        print(outcome.summary() + (" OK" if not problems else " FAILED"), flush=True)
        for problem in problems[:20]:
            print("  " + problem)
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
