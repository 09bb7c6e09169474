"""beanraft.client against greenstalk, and put-key against put: a script that prints figures.

Not a test (pytest does not collect it). Each figure is measured in the same run, against the
same server process, one after the other:

1. blocking ``Client`` vs ``greenstalk.Client``: N puts, then N reserve->delete cycles, one
   command at a time on one connection each (ops/s and the ratio Client / greenstalk, and each
   client's own CPU time per command, which the machine's load disturbs far less). The two
   clients take turns in chunks of ``--chunk`` commands (who starts alternates), so a change in
   the machine's load or in the server's state falls on both alike;
2. ``AsyncClient`` with 16 commands in flight on one connection vs greenstalk (puts, and
   reserve->delete with 16 workers sharing the connection);
3. on a three-node cluster, through the leader: pipelined ``put-key`` vs pipelined ``put``
   (raw protocol, 16 in flight on one connection), so the difference is the dedup table's cost;
   they too take turns in chunks of ``--chunk`` puts.

Servers: ``beanstalkd`` (in memory: the client's own cost shows most), ``beanraft`` (one node)
and ``cluster`` (three nodes), each started here and stopped by PID.

    .venv/bin/python tests/benchmarks/client_bench.py                    # all, N = 10,000
    .venv/bin/python tests/benchmarks/client_bench.py --count 2000 --targets beanraft

Progress and the figures of each round go to stderr; the table (medians) to stdout.
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


def take_turns(runs: dict, count: int, chunk: int, first: int) -> dict[str, tuple[float, float]]:
    """kind -> (ops/s, CPU µs of this thread per op) of each of ``runs`` (kind -> run(n) doing
    n operations), their chunks of ``chunk`` operations taking turns; ``first`` picks who
    starts, and the start alternates per chunk. The CPU is the client's own (user + system
    time of the calling thread), which the machine's load disturbs far less than the rate."""
    kinds = list(runs)
    spent = dict.fromkeys(kinds, 0.0)
    cpu = dict.fromkeys(kinds, 0.0)
    done, turn = 0, first
    while done < count:
        size = min(chunk, count - done)
        for kind in kinds[turn % len(kinds):] + kinds[:turn % len(kinds)]:
            started, cpu_started = time.perf_counter(), time.thread_time()
            runs[kind](size)
            spent[kind] += time.perf_counter() - started
            cpu[kind] += time.thread_time() - cpu_started
        done += size
        turn += 1
    return {kind: (rate(count, spent[kind]), cpu[kind] / count * 1e6) for kind in kinds}


def blocking_pair(clients: dict, name: str, count: int, chunk: int,
                  first: int) -> dict[str, tuple[float, float, float, float]]:
    """kind -> (puts/s, reserve->delete/s, CPU µs per put, per reserve->delete) of blocking
    clients, each on its own tube, taking turns."""
    for kind, client in clients.items():
        tube = f"{name}-{kind}"
        client.use(tube)
        client.watch(tube)
        client.ignore("default")
    body = "x" * 100

    def putter(client):
        def run(n: int) -> None:
            for _ in range(n):
                client.put(body)
        return run

    def worker(client):
        def run(n: int) -> None:
            for _ in range(n):
                client.delete(client.reserve())
        return run

    puts = take_turns({k: putter(c) for k, c in clients.items()}, count, chunk, first)
    cycles = take_turns({k: worker(c) for k, c in clients.items()}, count, chunk, first)
    return {kind: (puts[kind][0], cycles[kind][0], puts[kind][1], cycles[kind][1])
            for kind in clients}


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


def compare_clients(name: str, address: str, count: int, rounds: int, chunk: int) -> list[str]:
    """Medians over ``rounds``. In each round greenstalk and ``Client`` take turns in chunks
    (a server's snapshot, a grown journal or the machine's load falls on both alike); the
    AsyncClient runs after them, its ratio taken against greenstalk's figure of the round."""
    host, port = address.rsplit(":", 1)
    figures: dict[str, list[tuple[float, ...]]] = {"g": [], "c": [], "a": []}
    for number in range(rounds):
        with greenstalk.Client((host, int(port))) as theirs, bc.Client(address) as ours:
            pair = blocking_pair({"g": theirs, "c": ours}, f"{name}-{number}", count, chunk,
                                 number)
        figures["g"].append(pair["g"])
        figures["c"].append(pair["c"])
        figures["a"].append(asyncio.run(async_round(address, f"{name}-a{number}", count)))
        for kind in "gca":
            put_rate, cycle_rate, *cpu = figures[kind][-1]
            cpu_text = (f", client CPU {cpu[0]:.1f} µs per put, {cpu[1]:.1f} µs per "
                        "reserve+delete" if cpu else "")
            print(f"  {name} round {number} {kind}: put {put_rate:.0f}/s, "
                  f"reserve+delete {cycle_rate:.0f}/s{cpu_text}", file=sys.stderr)
    (g_put, c_put, a_put), (g_rd, c_rd, a_rd) = (
        [median([f[i] for f in figures[k]]) for k in "gca"] for i in (0, 1))
    (g_put_cpu, c_put_cpu), (g_rd_cpu, c_rd_cpu) = (
        [median([f[i] for f in figures[k]]) for k in "gc"] for i in (2, 3))
    rows = []
    rows.append(f"{name:10} put           greenstalk {g_put:9.0f}/s  Client {c_put:9.0f}/s "
                f"({c_put / g_put:.2f}x)  AsyncClient[16] {a_put:9.0f}/s ({a_put / g_put:.2f}x)")
    rows.append(f"{name:10} reserve+delete greenstalk {g_rd:8.0f}/s  Client {c_rd:9.0f}/s "
                f"({c_rd / g_rd:.2f}x)  AsyncClient[16] {a_rd:9.0f}/s ({a_rd / g_rd:.2f}x)")
    rows.append(f"{name:10} client CPU per put: greenstalk {g_put_cpu:.1f} µs, Client "
                f"{c_put_cpu:.1f} µs ({c_put_cpu / g_put_cpu:.2f}x); per reserve+delete: "
                f"greenstalk {g_rd_cpu:.1f} µs, Client {c_rd_cpu:.1f} µs "
                f"({c_rd_cpu / g_rd_cpu:.2f}x)")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--targets", default="beanstalkd,beanraft,cluster")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--chunk", type=int, default=500,
                        help="commands per turn when two clients (or put and put-key) alternate")
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
                    rows += compare_clients(kind, server.address, args.count, args.rounds,
                                            args.chunk)
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
                    chunks = iter(range(args.count))  # a fresh key part for every chunk

                    def puts(keyed_run: bool):
                        return lambda n: asyncio.run(raw_pipelined_puts(
                            host, port, n, keyed_run, f"{tag}-{next(chunks)}"))

                    # Turns in chunks, who starts alternating: the second of a pair meets a
                    # longer journal and a bigger state.
                    figures = take_turns({"put": puts(False), "put-key": puts(True)},
                                         args.count, args.chunk, number)
                    plain.append(figures["put"][0])
                    keyed.append(figures["put-key"][0])
                    print(f"  cluster round {number}: put {plain[-1]:.0f}/s, put-key "
                          f"{keyed[-1]:.0f}/s", file=sys.stderr)
                plain, keyed = median(plain), median(keyed)
                rows.append(f"cluster    put[16] {plain:9.0f}/s  put-key[16] {keyed:9.0f}/s "
                            f"({keyed / plain:.2f}x)")
            finally:
                cluster.stop()
    print(f"N = {args.count}, one connection per client, 100-byte bodies, turns of "
          f"{args.chunk}, medians of {args.rounds} rounds; finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
