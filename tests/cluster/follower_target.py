"""The ``follower`` target of the shared server fixtures in tests/conftest.py: a three-process
BeanRaft cluster whose client address is a follower's, so that every transcript, client-library
and differential test written for one server also checks that a follower answers exactly like
beanstalkd 1.12 (``pytest tests/transcripts -k follower``).

tests/conftest.py registers it with ``TARGETS["follower"] = follower_factory(connect_to)``; the
``connect_to`` it passes opens that file's ``Wire`` client, which this module does not import.

What each Target operation means here: ``address``, ``pid``, ``signal``, ``kill`` and
``restart`` are the chosen follower's; ``stop`` stops all three nodes; ``diagnostics`` is all
three logs (kept beside the test's other output in its tmp_path). Server flags go to every node; ``-b DIR`` becomes the parent of the three nodes' data
directories (DIR/n1, DIR/n2, DIR/n3), so a restart on the same DIR finds each node's data again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from .cluster_harness import Cluster, ClusterError, LineClient, NodeProcess, wait_for

READY_PROBE = b"list-tube-used\r\n"
READY_REPLY = b"USING default"


def follower_factory(connect_to: Callable) -> Callable:
    """Returns ``start_follower(spec) -> FollowerTarget`` for the TARGETS registry."""

    def start_follower(spec) -> FollowerTarget:
        target = FollowerTarget(spec, connect_to)
        target.start()
        return target

    return start_follower


def split_data_dir(args: tuple[str, ...]) -> tuple[tuple[str, ...], Path | None]:
    """Takes ``-b DIR`` out of the server flags: each node needs a directory of its own."""
    rest, data_root, items = [], None, iter(args)
    for arg in items:
        if arg == "-b":
            data_root = Path(next(items))
        else:
            rest.append(arg)
    return tuple(rest), data_root


class FollowerTarget:
    """A running cluster seen through one follower (duck-typed like tests/conftest.py's Target)."""

    def __init__(self, spec, connect_to: Callable):
        self.kind = spec.kind
        self.spec = spec
        self._connect_to = connect_to
        args, data_root = split_data_dir(tuple(spec.args))
        # Logs and data in the test's tmp_path (kept for a post-mortem); sockets in the short
        # workdir, which the fixture removes.
        output = getattr(spec, "output", None)
        workdir = output.with_suffix("") if output else spec.workdir
        self.cluster = Cluster(workdir, extra_args=args, unix=spec.unix, data_root=data_root,
                               socket_dir=spec.workdir)
        self.node: NodeProcess | None = None
        self.address = None

    @property
    def pid(self) -> int | None:
        return self.node.pid if self.node else None

    def start(self) -> None:
        """Starts the cluster, picks a follower, and waits until it answers a client."""
        try:
            self.cluster.start()
            # A test must see the rules the cluster settles on, not those of its first second.
            self.cluster.wait_rules_settled()
            self.node = sorted(self.cluster.followers(), key=lambda n: n.name)[0]
            self.address = self.node.client_address
            self._wait_serving()
        except ClusterError as error:
            self.stop()
            pytest.fail(f"follower target did not start: {error}\n{self.diagnostics()}")

    def _wait_serving(self, timeout_s: float = 20.0) -> None:
        """Like the single-server targets: ready once ``list-tube-used`` says ``USING default``."""
        last = ["no attempt"]

        def answers() -> bool:
            try:
                with LineClient(self.address, timeout_s=2) as client:
                    reply = client.request(READY_PROBE.rstrip(b"\r\n"))
            except (OSError, TimeoutError) as error:
                last[0] = repr(error)
                return False
            last[0] = repr(reply)
            return reply == READY_REPLY

        wait_for("the follower to answer a client", answers, timeout_s, poll_s=0.05,
                 describe=lambda: last[0])

    def connect(self, timeout: float = 3.0):
        return self._connect_to(self.address, timeout)

    def signal(self, sig: int) -> None:
        self.node.signal(sig)

    def kill(self) -> None:
        self.node.kill()

    def restart(self) -> None:
        """Stops the follower if it runs, starts it again on its ports and data, waits for it."""
        try:
            self.cluster.restart(self.node)
            self._wait_serving()
        except ClusterError as error:
            pytest.fail(f"follower did not come back: {error}\n{self.diagnostics()}")

    def stop(self) -> None:
        self.cluster.stop()

    def diagnostics(self) -> str:
        return self.cluster.logs()
