#!/usr/bin/env python3
"""Measure failover: how long after kill -9 of the leader a surviving node acknowledges a put.

    python tests/tools/failover.py                 # 10 trials on loopback
    python tests/tools/failover.py --trials 20 --settle 5

Method. Start a 3-node cluster (real ``beanraft serve`` processes, default timing flags) and
wait until every node is ready and agrees on the leader. Each trial then:

1. waits until the cluster is settled (all ready, one leader, equal applied index) and idles
   for ``--settle`` seconds;
2. starts a prober against one surviving node: a new put every ``--interval`` seconds (10 ms),
   each on an idle connection of a pool (a put in flight never delays the next one);
3. after half a second of probing, kill -9 the leader (time T0);
4. the trial's failover time is the earliest acknowledgement (INSERTED) of a put *issued after
   T0*, minus T0; a trial with none within ``--patience`` seconds counts as that long, and fails;
5. restarts the killed node (same flags, same -b directory) and waits until it is ready.

Prints each trial, then the median and the maximum against the targets (median < 1 s, no trial
over 3 s); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from faultkit.cluster import Cluster  # noqa: E402

MEDIAN_TARGET_S = 1.0
MAX_TARGET_S = 3.0


class Prober:
    """Issues a put every ``interval_s`` through a pool of connections; records issue/ack times."""

    def __init__(self, address: tuple[str, int], interval_s: float, timeout_s: float):
        self.address = address
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.results: list[tuple[float, float | None, str]] = []  # (issued, acked, reply)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._count = 0

    async def run(self, stop: asyncio.Event) -> None:
        tasks = set()
        while not stop.is_set():
            task = asyncio.ensure_future(self._put())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.timeout_s + 1)
            for task in pending:
                task.cancel()
        for _reader, writer in self._idle:
            writer.close()

    async def _put(self) -> None:
        self._count += 1
        body = f"failover-probe-{self._count}".encode()
        issued = time.monotonic()
        conn = None
        try:
            conn = self._idle.pop() if self._idle else await asyncio.wait_for(
                asyncio.open_connection(*self.address), self.timeout_s)
            reader, writer = conn
            writer.write(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body))
            line = await asyncio.wait_for(reader.readline(), self.timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            if conn:
                conn[1].close()
            self.results.append((issued, None, type(exc).__name__))
            return
        reply = line.decode(errors="replace").strip()
        if reply.startswith("INSERTED"):
            self.results.append((issued, time.monotonic(), reply))
            self._idle.append(conn)
        else:
            self.results.append((issued, None, reply or "EOF"))
            conn[1].close()

    def first_ack_after(self, t0: float) -> float | None:
        acks = [acked for issued, acked, _ in self.results if issued >= t0 and acked is not None]
        return min(acks) if acks else None


def settled(cluster: Cluster, timeout_s: float) -> bool:
    """All ready with one leader, then every node at the same applied index."""
    return cluster.wait_ready(timeout_s) and cluster.wait_converged(timeout_s) is not None


async def trial(cluster: Cluster, number: int, args) -> float:
    leader = cluster.leader()
    assert leader is not None, "no leader"
    survivor = next(n for n in cluster.nodes if n is not leader)
    prober = Prober(survivor.spec.client, args.interval, args.patience)
    stop = asyncio.Event()
    probing = asyncio.ensure_future(prober.run(stop))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    leader.kill()
    deadline = t0 + args.patience
    while prober.first_ack_after(t0) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    stop.set()
    await probing
    acked = prober.first_ack_after(t0)
    took = (acked - t0) if acked is not None else args.patience
    after = [r for r in prober.results if r[0] >= t0]
    failed = collections.Counter(r[2] for r in after if r[1] is None)
    new_leader = cluster.leader()
    print(f"trial {number:2d}: killed leader {leader.name}; first put issued after the kill "
          f"acknowledged by {survivor.name} after {took:.3f} s"
          + ("" if acked is not None else " (NONE: patience exhausted)")
          + f"; new leader {new_leader.name if new_leader else '?'}; "
          f"{len(after)} puts issued after the kill, {sum(failed.values())} without INSERTED"
          + (f" {dict(failed)}" if failed else ""), flush=True)
    leader.start()
    return took


async def main_async(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="beanraft-failover-"))
    cluster = Cluster(workdir, layout="loopback")
    times: list[float] = []
    try:
        cluster.create()
        if not settled(cluster, 60):
            print("the cluster did not become ready:\n" + cluster.nodes[0].log_tail())
            return 2
        print(f"cluster ready ({workdir}); {args.trials} trials, settle {args.settle} s, "
              f"a put every {args.interval * 1000:.0f} ms", flush=True)
        for number in range(1, args.trials + 1):
            if not settled(cluster, 60):
                print(f"trial {number}: the cluster did not settle; stopping")
                return 2
            await asyncio.sleep(args.settle)
            times.append(await trial(cluster, number, args))
    finally:
        cluster.close()
    median, worst = statistics.median(times), max(times)
    ok = median < MEDIAN_TARGET_S and worst <= MAX_TARGET_S
    print(f"failover over {len(times)} trials: median {median:.3f} s, min {min(times):.3f} s, "
          f"max {worst:.3f} s (targets: median < {MEDIAN_TARGET_S:.0f} s, max <= "
          f"{MAX_TARGET_S:.0f} s): {'PASS' if ok else 'FAIL'}")
    if ok:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"node logs kept in {workdir}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before each kill")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between probe puts")
    parser.add_argument("--patience", type=float, default=15.0,
                        help="give a trial up after this many seconds")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
