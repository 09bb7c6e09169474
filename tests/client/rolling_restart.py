"""A rolling restart of a three-node cluster under load, with beanraft.client producers and workers.

``run(workdir)`` starts three real nodes (faultkit's loopback cluster), three producers and three
workers (``Client`` threads of client_app, each given all three addresses), then restarts
the nodes one at a time, followers first and the leader last, as docs/how-to/rolling-upgrade.md
says: SIGTERM, wait for the process to exit, start it again on the same data, wait until every
node is ready, let the load run a moment, next node. Then the producers stop, the workers drain
the tube, and client_app's checks apply: no exception reached application code, every
acknowledged put was deleted exactly once, no body was reserved twice, no duplicate job, nothing
left in the cluster.

It also measures, for each restart, the **write pause**: the longest time between two
consecutive acknowledged puts (any producer) from the SIGTERM until the node is ready again.
The producers put every 10 ms each, so without a restart that gap is a few tens of ms. The
figures are printed by the command::

    .venv/bin/python tests/client/rolling_restart.py --rounds 3

(the suite's test checks correctness only, never a time).
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))

import client_app  # noqa: E402
from client_app import Outcome  # noqa: E402
from client_faults import loopback_cluster  # noqa: E402
from faultkit.cluster import Cluster  # noqa: E402

EXIT_TIMEOUT_S = 10.0  # SIGTERM -> exit; the node gives itself at most ~5 s
READY_TIMEOUT_S = 40.0


@dataclass
class Restart:
    node: str
    was_leader: bool
    signalled: float = 0.0
    exited: float = 0.0
    ready: float = 0.0
    exit_code: int | None = None
    write_pause_s: float = 0.0
    pause_at_s: float = 0.0  # when the longest pause began, from the SIGTERM


@dataclass
class RollingOutcome:
    outcome: Outcome
    restarts: list[Restart] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)  # monotonic time of every acknowledged put
    quiet_pause_s: float = 0.0  # the longest gap between acknowledged puts outside the restarts

    def problems(self) -> list[str]:
        found = self.outcome.problems()
        found += [f"{r.node} exited with {r.exit_code} after SIGTERM" for r in self.restarts
                  if r.exit_code != 0]
        return found

    def summary(self) -> str:
        lines = [self.outcome.summary()]
        for r in self.restarts:
            lines.append(f"  restart {r.node}{' (leader)' if r.was_leader else ''}: exit "
                         f"{r.exit_code} after {r.exited - r.signalled:.2f} s, ready again after "
                         f"{r.ready - r.signalled:.2f} s, longest write pause "
                         f"{r.write_pause_s * 1000:.0f} ms (from {r.pause_at_s:+.2f} s)")
        worst = max((r.write_pause_s for r in self.restarts), default=0.0)
        lines.append(f"  longest write pause of any restart: {worst * 1000:.0f} ms; between "
                     f"restarts (no node stopping or starting): {self.quiet_pause_s * 1000:.0f} ms")
        return "\n".join(lines)


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest time between consecutive entries of ``times`` (sorted) within [start, end],
    counting from the last one before ``start`` and to the first one after ``end``; and when
    that gap began, relative to ``start``."""
    i = max(0, bisect.bisect_left(times, start) - 1)
    j = min(len(times), bisect.bisect_right(times, end) + 1)
    window = times[i:j]
    return max(((b - a, a - start) for a, b in zip(window, window[1:])),
               default=(end - start, 0.0))


def quiet_gap(times: list[float], restarts: list[Restart]) -> float:
    """The longest gap between acknowledged puts that lies wholly between two restarts (from
    a node's ready to the next SIGTERM): what the load and the machine cost without one."""
    windows = [(a.ready, b.signalled) for a, b in zip(restarts, restarts[1:])]
    gaps = [b - a for a, b in zip(times, times[1:])
            if any(start <= a and b <= end for start, end in windows)]
    return max(gaps, default=0.0)


def restart(cluster: Cluster, node, settle_s: float, rolling: RollingOutcome) -> None:
    leader = cluster.leader()
    record = Restart(node.name, node is leader)
    rolling.restarts.append(record)
    record.signalled = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    try:
        record.exit_code = node.process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stack_dump(node)
        node.kill()
        record.exit_code = None
    record.exited = time.monotonic()
    node.start()
    if not cluster.wait_ready(READY_TIMEOUT_S):
        raise RuntimeError(f"cluster not ready {READY_TIMEOUT_S} s after restarting {node.name}")
    record.ready = time.monotonic()
    time.sleep(settle_s)


def _stack_dump(node) -> None:
    """Keep the thread stacks of a node that did not exit in its log (when py-spy is there)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy:
        dump = subprocess.run([spy, "dump", "--pid", str(node.pid)], capture_output=True,
                              text=True, timeout=60)
        with open(node.spec.log_path, "a") as log:
            log.write(f"--- py-spy dump of pid {node.pid} that did not exit after SIGTERM\n"
                      f"{dump.stdout}{dump.stderr}")


def roll(cluster: Cluster, rounds: int, settle_s: float, rolling: RollingOutcome) -> None:
    """Restart every node ``rounds`` times over: followers first, the leader last."""
    for _round in range(rounds):
        leader = cluster.leader()
        order = [n for n in cluster.nodes if n is not leader] + ([leader] if leader else [])
        for node in order:
            restart(cluster, node, settle_s, rolling)


def run(workdir: Path, rounds: int = 1, settle_s: float = 1.0) -> RollingOutcome:
    rolling = RollingOutcome(Outcome(seed=0, flavour="rolling restart"))
    outcome = rolling.outcome
    stop, done = threading.Event(), threading.Event()
    with loopback_cluster(workdir) as (cluster, addresses):
        try:
            threads = client_app.threads(addresses, outcome, stop, done, rolling.acked_at)
            for thread in threads:
                thread.start()
            time.sleep(settle_s)  # the load is running before the first SIGTERM
            try:
                roll(cluster, rounds, settle_s, rolling)
            except Exception as error:
                outcome.errors.append(f"rolling restart: {error!r}")
            outcome.faults = [f"SIGTERM {r.node}{' (leader)' if r.was_leader else ''}"
                              for r in rolling.restarts]
            client_app.wind_down(outcome, addresses, threads, stop, done)
        finally:
            stop.set()
            done.set()
    times = sorted(rolling.acked_at)
    for record in rolling.restarts:
        record.write_pause_s, record.pause_at_s = longest_gap(times, record.signalled, record.ready)
    rolling.quiet_pause_s = quiet_gap(times, rolling.restarts)
    return rolling


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="restart every node this many times over")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of load between restarts")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/beanraft-rolling-restart"))
    args = parser.parse_args()
    rolling = run(args.workdir, args.rounds, args.settle)
    problems = rolling.problems()
    print(rolling.summary() + ("\nOK" if not problems else "\nFAILED"), flush=True)
    for problem in problems[:20]:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
