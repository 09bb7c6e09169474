"""Log entries written per second by idle ``beanraft.client`` workers: a script, not a test.

Starts a three-node cluster, measures the leader's commit index over ``--seconds`` with no
client, then again while ``--workers`` ``Client`` workers (all three addresses) each wait in
``reserve()`` with nothing to reserve, and prints both rates. Every process it starts is
stopped by PID.

    .venv/bin/python tests/benchmarks/idle_worker_bench.py --workers 4 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from beanraft import client as bc  # noqa: E402
from cluster.cluster_harness import Cluster  # noqa: E402


def entries_per_second(cluster: Cluster, seconds: float) -> float:
    leader = cluster.leader()
    before, started = leader.status()["commit_index"], time.monotonic()
    time.sleep(seconds)
    after = leader.status()["commit_index"]
    return (after - before) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), size=3).start()
        try:
            idle_cluster = entries_per_second(cluster, args.seconds)
            addresses = [node.client_address for node in cluster.nodes]
            stop = threading.Event()
            workers = [bc.Client(addresses, watch="idle-bench") for _ in range(args.workers)]

            def wait(client: bc.Client) -> None:
                while not stop.is_set():
                    try:
                        client.reserve(timeout=2)
                    except bc.TimedOutError:
                        pass

            threads = [threading.Thread(target=wait, args=(w,), daemon=True) for w in workers]
            for thread in threads:
                thread.start()
            time.sleep(3)  # every worker connected and waiting
            with_workers = entries_per_second(cluster, args.seconds)
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            for worker in workers:
                worker.close()
        finally:
            cluster.stop()
    print(f"date {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"log entries/s, no client:              {idle_cluster:.2f}")
    print(f"log entries/s, {args.workers} idle workers:          {with_workers:.2f} "
          f"({(with_workers - idle_cluster) / args.workers:.2f} per worker)")


if __name__ == "__main__":
    main()
