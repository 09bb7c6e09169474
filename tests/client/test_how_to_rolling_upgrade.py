"""Goal: the rolling upgrade how-to (docs/how-to/rolling-upgrade.md) works as written, under load:
followers first, the leader last, and applications on beanraft.client see no error, lose no
job and run none twice.

Method: the page's shell blocks of "Rehearse on one machine" are run in order by one bash
process, with only their first line changed (a temporary directory and free ports instead of
/tmp/br-upgrade and 11300/21300/8301). Once the cluster is up, three producers and three workers
(client_app's Client threads, all three addresses) start; the restarts run under them; then
the page's `beanraft leader transfer`, the drain and client_app's checks; the one hand-over of
the restarts must be the leader's, restarted last. The nodes are the bash process's children,
stopped by the page's last block (or by their PIDs if a step failed).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import client_app
import pytest
from client_app import Outcome

from cluster.cluster_harness import free_port_block, pid_alive, wait_for

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "rolling-upgrade.md"
FIRST_LINE = "B=/tmp/br-upgrade CLIENT=11300 RAFT=21300 HTTP=8301"
STEP_TIMEOUT_S = 120.0
GAVE_UP = "WARNING beanraft.node: stopping without handing over the leadership: "


def led_at_sigterm(log: str) -> bool:
    """Whether a node's log shows it leading when it began to shut down the first time."""
    before = log.split("INFO beanraft.node: shutting down", 1)[0]
    roles = re.findall(r"INFO beanraft\.raft: role \w+ -> (\w+)", before)
    return bool(roles) and roles[-1] == "leader"


def shutdowns(log: str) -> str:
    """A node's log lines about roles, transfers and stopping: what a failed check shows."""
    keep = ("role ", "transfer", "hand", "shutting down", "stopped", "ERROR", "WARNING", "Error")
    return "".join(line for line in log.splitlines(keepends=True) if any(k in line for k in keep))


def page_blocks() -> list[str]:
    section = PAGE.read_text().split("## Rehearse on one machine", 1)[1]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


class Shell:
    """One bash process that runs the page's blocks in order; each step ends with a marker."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen(["bash"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        self.steps = 0

    def run(self, script: str) -> str:
        self.steps += 1
        marker = f"__step {self.steps} done__"
        self.process.stdin.write(f"set -e\n{script}\necho '{marker}'\n")
        self.process.stdin.flush()
        lines, deadline = [], time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"bash ended in step {self.steps}: {''.join(lines)}")
            if line.strip() == marker:
                return "".join(lines)
            lines.append(line)
        raise AssertionError(f"step {self.steps} did not end in time: {''.join(lines)}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


@pytest.mark.timeout(300)
def test_the_rolling_upgrade_page_restarts_every_node_under_load_without_an_error(tmp_path):
    blocks = page_blocks()
    assert len(blocks) == 5 and blocks[0].startswith(FIRST_LINE + "\n")
    # Three blocks apart: each is only checked free, not held, until the nodes bind them.
    client = free_port_block(3)
    raft = free_port_block(3, avoid=range(client, client + 3))
    http = free_port_block(3, avoid=[*range(client, client + 3), *range(raft, raft + 3)])
    base = tmp_path / "br"
    blocks[0] = blocks[0].replace(FIRST_LINE, f"B={base} CLIENT={client} RAFT={raft} HTTP={http}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("BEANRAFT_")}
    shell = Shell(env)
    outcome = Outcome(seed=0, flavour="how-to rolling upgrade")
    stop, done = threading.Event(), threading.Event()
    addresses = [("127.0.0.1", client + i) for i in range(3)]
    threads = client_app.threads(addresses, outcome, stop, done)
    try:
        shell.run(blocks[0])  # start three nodes, wait until ready
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        status = shell.run(blocks[1] + blocks[2])  # restart followers, then the leader
        # Read now: stopping the rehearsal below SIGTERMs every node at once, and a leader may
        # then hand over to a node that is stopping too (a hand-over the restarts did not make).
        last = shell.run('echo "$leader"').strip()  # the node the page restarted last
        restarted = {i: (base / f"node{i}.log").read_text() for i in ("1", "2", "3")}
        handed = [i for i, log in restarted.items() if "handed the leadership to" in log]
        gave_up = [i for i, log in restarted.items() if GAVE_UP in log]
        leading = [i for i, log in restarted.items() if led_at_sigterm(log)]
        moved = shell.run(blocks[3])  # beanraft leader transfer
        client_app.wind_down(outcome, addresses, threads, stop, done)
        shell.run(blocks[4])  # stop the rehearsal
        shell.close()
        pids = [int(f.read_text()) for f in base.glob("node*.pid")]
        wait_for("the nodes to exit after SIGTERM", lambda: not any(map(pid_alive, pids)), 20)
        logs = [(base / f"node{i}.log").read_text() for i in (1, 2, 3)]
        # Each node that led when it got SIGTERM, and no other, handed the leadership over:
        # the page's leader, restarted last, unless an election on a starved machine moved the
        # leadership meanwhile (then the node leading at its turn hands over instead). The page
        # allows one outcome more: a hand-over that did not succeed within 1.5 s (on a starved
        # machine) is logged with its reason, and the others elect a leader as after a crash;
        # the clients' checks below hold either way.
        assert sorted(handed + gave_up) == leading and not set(handed) & set(gave_up), (
            f"nodes that handed over during the restarts: {handed}; that gave up: {gave_up}; "
            f"that led at their SIGTERM: {leading}; restarted last: {last}"
            + "".join(f"\nnode{i}:\n{shutdowns(log)}" for i, log in restarted.items()))
        assert all(log.count("shutting down") == 2 and log.count("INFO beanraft.node: stopped") == 2
                   for log in logs)
        assert status.count("leader") >= 1 and "no leader" not in status
        assert moved.startswith("leader is now ")
        assert outcome.acked, "no put was acknowledged"
        assert outcome.problems() == []
    finally:
        stop.set()
        done.set()
        for pid_file in base.glob("node*.pid"):
            pid = int(pid_file.read_text())
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if shell.process.poll() is None:
            shell.process.kill()
