"""The application that the client fault tests run on a cluster, and the checks of its run.

Three producers and three workers written against beanraft.client (``Client`` threads, or
``AsyncClient`` tasks), each given all three addresses. What they saw is recorded in an
``Outcome``; ``wind_down`` stops the producers, lets the workers drain the tube and notes what is
left in the cluster; then ``Outcome.problems`` names every anomaly:

* an exception that reached application code (``TimedOutError`` of ``reserve(timeout=1)`` is the
  API's own answer for "no job yet", not an error);
* an acknowledged put not deleted by a worker exactly once (lost, or run twice);
* a body reserved twice; a duplicate job (a body under two ids); a body never put;
* anything left in the cluster at the end.

client_faults.py (a nemesis), rolling_restart.py and the rolling upgrade how-to's test share it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from beanraft import client as bc

TUBE = "app"
TTR_S = 60  # longer than any fault: a job runs twice only if the client's session is lost
DRAIN_S = 60.0
WORKER_RESERVE_S = 1  # a worker's reserve timeout: how long its last reserve may still run


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


def timed(outcome: Outcome, client, started: float, failovers_before: int) -> None:
    if client.failovers != failovers_before:
        with outcome.lock:
            outcome.pauses.append(time.monotonic() - started)


def producer(addresses, name: str, outcome: Outcome, stop: threading.Event,
             acked_at: list[float] | None = None) -> None:
    """Put a job every 10 ms until ``stop``; note in ``acked_at`` (when given) the monotonic
    time of every acknowledged put."""
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
                    if acked_at is not None:
                        acked_at.append(time.monotonic())
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
                    job = client.reserve(timeout=WORKER_RESERVE_S)
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
                    job = await client.reserve(timeout=WORKER_RESERVE_S)
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


def drained(outcome: Outcome) -> bool:
    with outcome.lock:
        return all(outcome.deleted[body] for body in outcome.acked)


def threads(addresses, outcome: Outcome, stop: threading.Event, done: threading.Event,
            acked_at: list[float] | None = None) -> list[threading.Thread]:
    """Three producers (until ``stop``) and three workers (until ``done``), not started yet."""
    made = [threading.Thread(target=producer, args=(addresses, f"p{i}", outcome, stop, acked_at))
            for i in range(3)]
    made += [threading.Thread(target=worker, args=(addresses, f"w{i}", outcome, done))
             for i in range(3)]
    return made


def wind_down(outcome: Outcome, addresses, running: list[threading.Thread],
              stop: threading.Event, done: threading.Event) -> None:
    """Stop the producers, let the workers drain the tube (up to DRAIN_S), stop them, and note in
    ``outcome.left`` the jobs the cluster still holds in the tube."""
    stop.set()
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and not drained(outcome) and not outcome.errors:
        time.sleep(0.2)
    time.sleep(WORKER_RESERVE_S + 0.5)  # a worker's last reserve ends
    done.set()
    for thread in running:
        thread.join(timeout=60)
    with bc.Client(addresses, failover_timeout=30) as checker:
        try:
            stats = checker.stats_tube(TUBE)
            outcome.left = {k: v for k, v in stats.items() if k.startswith("current-jobs") and v}
        except bc.NotFoundError:
            outcome.left = {}
