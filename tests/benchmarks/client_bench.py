"""beanraft.client against greenstalk, and put-key against put: a script that prints figures.

Not a test (pytest does not collect it). Each figure is measured in the same run, against the
same server process, one after the other:

1. blocking ``Client`` vs ``greenstalk.Client``: N puts, then N reserve->delete cycles, one
   command at a time on one connection (ops/s and the ratio Client / greenstalk);
2. ``AsyncClient`` with 16 commands in flight on one connection vs greenstalk (puts, and
   reserve->delete with 16 workers sharing the connection);
3. on a three-node cluster, through the leader: pipelined ``put-key`` vs pipelined ``put``
   (raw protocol, 16 in flight on one connection), so the difference is the dedup table's cost.

Servers: ``beanstalkd`` (in memory: the client's own cost shows most), ``beanraft`` (one node)
and ``cluster`` (three nodes), each started here and stopped by PID.

    .venv/bin/python tests/benchmarks/client_bench.py                    # all, N = 10,000
    .venv/bin/python tests/benchmarks/client_bench.py --count 2000 --targets beanraft
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "client")]

import greenstalk  # noqa: E402
from client_harness import ServerProcess  # noqa: E402

from beanraft import client as bc  # noqa: E402
from cluster.cluster_harness import Cluster  # noqa: E402

IN_FLIGHT = 16


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def blocking_round(client, tube: str, count: int) -> tuple[float, float]:
    """(puts/s, reserve->delete/s) for one blocking client on its own tube."""
    client.use(tube)
    client.watch(tube)
    client.ignore("default")
    body = "x" * 100
    put_s = timed(lambda: [client.put(body) for _ in range(count)])

    def cycles():
        for _ in range(count):
            client.delete(client.reserve())

    return rate(count, put_s), rate(count, timed(cycles))


async def async_round(address: str, tube: str, count: int) -> tuple[float, float]:
    async with bc.AsyncClient(address, use=tube, watch=tube) as client:
        body = "x" * 100
        queue = iter(range(count))

        async def putter():
            for _ in queue:
                await client.put(body)

        started = time.perf_counter()
        await asyncio.gather(*(putter() for _ in range(IN_FLIGHT)))
        put_s = time.perf_counter() - started
        cycles = iter(range(count))

        async def worker():
            for _ in cycles:
                job = await client.reserve()
                await client.delete(job)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return rate(count, put_s), rate(count, time.perf_counter() - started)


async def raw_pipelined_puts(host: str, port: int, count: int, keyed: bool, tag: str) -> float:
    """puts/s of ``count`` put (or put-key) commands with IN_FLIGHT in flight, one connection."""
    reader, writer = await asyncio.open_connection(host, port)
    body = b"x" * 100
    sent = done = 0
    started = time.perf_counter()
    while done < count:
        batch = []
        while sent < count and sent - done < IN_FLIGHT:
            head = (f"put-key {tag}-{sent} 0 0 60 {len(body)}" if keyed
                    else f"put 0 0 60 {len(body)}")
            batch.append(head.encode() + b"\r\n" + body + b"\r\n")
            sent += 1
        writer.write(b"".join(batch))
        line = await reader.readline()
        if not line.startswith(b"INSERTED"):
            raise RuntimeError(f"put answered {line!r}")
        done += 1
    elapsed = time.perf_counter() - started
    writer.close()
    return rate(count, elapsed)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def compare_clients(name: str, address: str, count: int, rounds: int) -> list[str]:
    """Medians over ``rounds``; in each round the three clients run one after the other."""
    host, port = address.rsplit(":", 1)
    figures: dict[str, list[tuple[float, float]]] = {"g": [], "c": [], "a": []}

    def greenstalk_round(number: int) -> tuple[float, float]:
        with greenstalk.Client((host, int(port))) as theirs:
            return blocking_round(theirs, f"{name}-g{number}", count)

    def client_round(number: int) -> tuple[float, float]:
        with bc.Client(address) as ours:
            return blocking_round(ours, f"{name}-c{number}", count)

    runs = {"g": greenstalk_round, "c": client_round,
            "a": lambda number: asyncio.run(async_round(address, f"{name}-a{number}", count))}
    order = "gca"
    for number in range(rounds):
        # Rotate who goes first: a server's snapshot or a journal that has grown falls on
        # whoever runs at that moment, and must not fall on the same client every round.
        for kind in order[number % 3:] + order[:number % 3]:
            figures[kind].append(runs[kind](number))
    (g_put, c_put, a_put), (g_rd, c_rd, a_rd) = (
        [median([f[i] for f in figures[k]]) for k in "gca"] for i in (0, 1))
    rows = []
    rows.append(f"{name:10} put           greenstalk {g_put:9.0f}/s  Client {c_put:9.0f}/s "
                f"({c_put / g_put:.2f}x)  AsyncClient[16] {a_put:9.0f}/s ({a_put / g_put:.2f}x)")
    rows.append(f"{name:10} reserve+delete greenstalk {g_rd:8.0f}/s  Client {c_rd:9.0f}/s "
                f"({c_rd / g_rd:.2f}x)  AsyncClient[16] {a_rd:9.0f}/s ({a_rd / g_rd:.2f}x)")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--targets", default="beanstalkd,beanraft,cluster")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    args = parser.parse_args()
    targets = args.targets.split(",")
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="br-client-bench-") as tmp:
        for kind in ("beanstalkd", "beanraft"):
            if kind in targets:
                server = ServerProcess(kind, Path(tmp) / kind)
                server.workdir.mkdir()
                server.start()
                try:
                    print(f"measuring {kind} ...", file=sys.stderr)
                    rows += compare_clients(kind, server.address, args.count, args.rounds)
                finally:
                    server.stop()
        if "cluster" in targets:
            cluster = Cluster(Path(tmp) / "cluster", size=3).start()
            try:
                print("measuring cluster ...", file=sys.stderr)
                host, port = cluster.leader().client_address
                plain, keyed = [], []
                for number in range(args.rounds):
                    tag = f"r{number}-{int(time.time())}"
                    # Alternate which goes first: the second of a pair meets a longer journal.
                    for keyed_run in ((False, True) if number % 2 == 0 else (True, False)):
                        figure = asyncio.run(raw_pipelined_puts(host, port, args.count,
                                                                keyed_run, tag))
                        (keyed if keyed_run else plain).append(figure)
                plain, keyed = median(plain), median(keyed)
                rows.append(f"cluster    put[16] {plain:9.0f}/s  put-key[16] {keyed:9.0f}/s "
                            f"({keyed / plain:.2f}x)")
            finally:
                cluster.stop()
    print(f"N = {args.count}, one connection per client, 100-byte bodies, "
          f"medians of {args.rounds} rounds; finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
