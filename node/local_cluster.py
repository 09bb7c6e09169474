"""``beanraft cluster``: N nodes on loopback, kept running until SIGINT or SIGTERM.

Theory of operation.
* The nodes are ``ServeProcess`` children (see ``launcher``), each in a process group of its
  own, so a Ctrl-C in the terminal reaches only this supervisor, which then stops them all in
  one step; a node never sees the signal first and looks as if it had died.
* SIGINT, SIGTERM and SIGHUP are handled explicitly. A background job of a non-interactive
  shell (``beanraft cluster &`` in a script) starts with SIGINT ignored, and Python then installs
  no Ctrl-C handler of its own; installing ours makes SIGINT stop the cluster there too.
* A node that exits while the supervisor runs is reported on stderr (with whether the others
  still form a majority) and started again on its ports and data, at most ``max_restarts`` times
  per node, a second after it exited. Once every node is gone and none may be restarted, the
  supervisor exits with status 1.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

from .launcher import ServeProcess, stop_all

POLL_S = 0.5
RESTART_DELAY_S = 1.0  # a node that exits at once does not spin: bounded by max_restarts anyway
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def describe_exit(code: int | None) -> str:
    """'killed by SIGKILL' or 'exit status 3'."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Starts the nodes, restarts one that exits (a bounded number of times), stops on a signal."""

    def __init__(self, nodes: list[ServeProcess], max_restarts: int, say: Callable[[str], None]):
        self.nodes = nodes
        self.max_restarts = max_restarts
        self.say = say
        self.restarts = {node.name: 0 for node in nodes}
        self.exited_at: dict[str, float] = {}  # name -> monotonic time its exit was seen
        self.given_up: set[str] = set()
        self.stopping = threading.Event()
        self.signal_name: str | None = None

    def _on_signal(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.stopping.set()

    def run(self) -> int:
        """Runs until a stop signal (exit status 0) or until every node is gone for good (1)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            for node in self.nodes:
                node.start()
            while not self.stopping.wait(POLL_S):
                self._watch()
                if not any(n.alive() for n in self.nodes) and len(self.given_up) == len(self.nodes):
                    self.say("every node has exited and none may be restarted; stopping")
                    return 1
            self.say(f"{self.signal_name}: stopping the cluster")
            return 0
        finally:
            for sig in STOP_SIGNALS:  # a second signal must not cut the stopping short
                signal.signal(sig, signal.SIG_IGN)
            stop_all(self.nodes)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> None:
        now = time.monotonic()
        for node in self.nodes:
            if node.alive() or node.name in self.given_up:
                continue
            if node.name not in self.exited_at:
                self.exited_at[node.name] = now
                self._report_exit(node)
            elif now - self.exited_at[node.name] >= RESTART_DELAY_S:
                self.restarts[node.name] += 1
                del self.exited_at[node.name]
                node.start()
                self.say(f"{node.name} restarted (pid {node.pid}, restart "
                         f"{self.restarts[node.name]} of {self.max_restarts})")

    def _report_exit(self, node: ServeProcess) -> None:
        running = [n.name for n in self.nodes if n.alive()]
        majority = len(running) > len(self.nodes) // 2
        serving = (f"the cluster keeps serving on {', '.join(running)}" if majority else
                   f"{', '.join(running) or 'no node'} still running: no majority, so no commits "
                   "until enough nodes are back")
        if self.restarts[node.name] >= self.max_restarts:
            self.given_up.add(node.name)
            self.exited_at.pop(node.name, None)
            plan = f"not restarting it (restarted {self.restarts[node.name]} times already)"
        else:
            plan = f"restarting it in {RESTART_DELAY_S:g} s"
        self.say(f"{node.name} exited ({describe_exit(node.process.returncode)}); {serving}; {plan}")
