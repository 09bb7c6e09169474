"""Producers and workers written against beanraft.client, on a cluster that a nemesis hurts.

``run(seed, seconds, flavour)`` starts three real nodes (faultkit's loopback cluster), three
producers and three workers (``Client`` threads, or ``AsyncClient`` tasks for flavour
"async"), each given all three addresses, and a seeded nemesis that every ~3 s kill -9s or
SIGSTOPs the leader or any node and restarts/continues it 1.5-3 s later. Then the producers
stop, the workers drain the tube, and the outcome is checked (client_app.py: no exception in
application code, nothing lost, nothing run twice, no duplicate, nothing left).

It also returns the application-visible pause of every call during which its client failed
over. The long run is a command::

    .venv/bin/python tests/client/client_faults.py --seconds 60 --seeds 1 2 3 4 5 [--async]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))

import client_app  # noqa: E402
from client_app import Outcome  # noqa: E402
from faultkit.cluster import Cluster  # noqa: E402

NODE_GRACE_S = 6.0  # how long a silent node's sessions wait to be resumed elsewhere


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


# ------------------------------------------------------------------------- one run


@contextlib.contextmanager
def loopback_cluster(workdir: Path):
    """Three real nodes on loopback, ready; yields the cluster and the nodes' client addresses,
    and closes the cluster at the end."""
    cluster = Cluster(workdir, layout="loopback", commit_timeout_s=5.0,
                      node_grace_s=NODE_GRACE_S, freeze=False)
    try:
        cluster.create()
        if not cluster.wait_ready(60.0):
            raise RuntimeError("cluster not ready")
        yield cluster, [(n.spec.host, n.spec.client_port) for n in cluster.nodes]
    finally:
        cluster.close()


def run(seed: int, seconds: float, workdir: Path, flavour: str = "blocking") -> Outcome:
    outcome = Outcome(seed, flavour)
    stop, done = threading.Event(), threading.Event()
    with loopback_cluster(workdir) as (cluster, addresses):
        try:
            nemesis = Nemesis(cluster, seed, time.monotonic() + seconds, outcome)
            if flavour == "async":
                threads = [threading.Thread(target=asyncio.run, args=(
                    client_app.async_app(addresses, outcome, stop, done),))]
            else:
                threads = client_app.threads(addresses, outcome, stop, done)
            for thread in threads + [nemesis]:
                thread.start()
            nemesis.join(timeout=seconds + 90)
            stop.set()
            if nemesis.error is not None:
                outcome.errors.append(f"nemesis: {nemesis.error!r}")
            client_app.wind_down(outcome, addresses, threads, stop, done)
        finally:
            stop.set()
            done.set()
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
