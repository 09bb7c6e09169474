"""A private network for a fault test: one network namespace per node, joined by a bridge.

Theory of operation.
* A hub namespace holds a Linux bridge. Every node gets a namespace of its own whose ``eth0`` is
  one end of a veth pair; the other end is a port of the bridge. Node i has address
  ``10.213.X.i/24``, where X is a /24 that no interface of this machine uses yet.
* The test process stays in the root namespace and reaches the nodes through one more veth pair:
  its root end has ``10.213.X.254/24``, its hub end is a bridge port. The /24 exists only on these
  interfaces, so nothing leaves the machine and nothing else on it is routed there. The bridge
  lives in the hub namespace, never in the root one, so the host's firewall (Docker's FORWARD
  policy, br_netfilter) never sees the traffic.
* A partition is symmetric and silent: ``iptables -A BRFAULT -s <peer> -j DROP`` in the INPUT
  path of every receiving namespace, for each pair cut. Senders notice nothing (exactly a lost
  link: no RST, no ICMP), established connections stall, and the test's own client traffic from
  .254 still reaches an isolated node, whose clients then see their commands time out.
* Everything is named after the test process's pid (``brf<pid>...``): ``close()`` deletes it, and
  ``sweep_stale()`` deletes what a test process that died (kill -9, power loss) left behind.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess

PREFIX = "brf"
CHAIN = "BRFAULT"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here (not root, no ``ip``/``iptables``, or refused)."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables)"
    probe = f"{PREFIX}{os.getpid()}probe"
    try:
        _run(["ip", "netns", "add", probe])
        try:
            _run(["ip", "netns", "exec", probe, "iptables", "-L", "INPUT", "-n"])
        finally:
            _run(["ip", "netns", "del", probe], check=False)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    return None


def sweep_stale() -> list[str]:
    """Delete namespaces left by fault-test processes that no longer run; return their names."""
    result = _run(["ip", "netns", "list"], check=False)
    removed = []
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX + "-"):
            continue
        pid = name.split("-")[1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    out += _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
    nets = []
    for word in out.split():
        if "/" in word and word[0].isdigit():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    return nets


def _pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = list(range(1, 255))
    random.Random(os.getpid()).shuffle(candidates)
    for third in candidates:
        net = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsUnavailable("no free /24 in 10.213.0.0/16")


class Network:
    """The namespaces, bridge and veths of one test run (see the module docstring)."""

    def __init__(self, nodes: int):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{PREFIX}-{os.getpid()}-hub"
        self.namespaces = [f"{PREFIX}-{os.getpid()}-n{i + 1}" for i in range(nodes)]
        self.subnet = _pick_subnet()
        hosts = list(self.subnet.hosts())
        self.addresses = [str(hosts[i]) for i in range(nodes)]
        self.root_address = str(hosts[253])
        self.cut: set[frozenset[int]] = set()
        self._created = False

    def create(self) -> "Network":
        """Build everything; on any failure, remove what was built and raise NetnsUnavailable."""
        try:
            self._create()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            self.close()
            raise NetnsUnavailable(str(exc)) from exc
        return self

    def _create(self) -> None:
        self._created = True
        hub = self.hub
        _run(["ip", "netns", "add", hub])
        _run(["ip", "-n", hub, "link", "set", "lo", "up"])
        _run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", hub, "link", "set", "br0", "up"])
        prefix = self.subnet.prefixlen
        for i, (ns, address) in enumerate(zip(self.namespaces, self.addresses)):
            port = f"{self.tag}n{i + 1}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", port, "netns", hub])
            _run(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{address}/{prefix}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "netns", "exec", ns, "iptables", "-N", CHAIN])
            _run(["ip", "netns", "exec", ns, "iptables", "-I", "INPUT", "-j", CHAIN])
        root, root_peer = f"{self.tag}r", f"{self.tag}h"
        _run(["ip", "link", "add", root, "type", "veth", "peer", "name", root_peer, "netns", hub])
        _run(["ip", "-n", hub, "link", "set", root_peer, "master", "br0", "up"])
        _run(["ip", "addr", "add", f"{self.root_address}/{prefix}", "dev", root])
        _run(["ip", "link", "set", root, "up"])

    def exec_prefix(self, index: int) -> list[str]:
        """The argv prefix that runs a command inside node ``index``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[index]]

    # -- partitions ------------------------------------------------------------------------

    def partition(self, groups: list[list[int]]) -> None:
        """Cut every link between nodes of different groups, in both directions."""
        for a, group in enumerate(groups):
            for other in groups[a + 1:]:
                for i in group:
                    for j in other:
                        self._cut(i, j)

    def isolate(self, index: int) -> None:
        """Cut node ``index`` off from every other node (its clients still reach it)."""
        others = [i for i in range(len(self.namespaces)) if i != index]
        self.partition([[index], others])

    def _cut(self, i: int, j: int) -> None:
        pair = frozenset((i, j))
        if pair in self.cut:
            return
        for me, peer in ((i, j), (j, i)):
            _run(self.exec_prefix(me) + ["iptables", "-A", CHAIN, "-s", self.addresses[peer],
                                         "-j", "DROP"])
        self.cut.add(pair)

    def heal(self) -> None:
        """Remove every cut."""
        for i in range(len(self.namespaces)):
            _run(self.exec_prefix(i) + ["iptables", "-F", CHAIN], check=False)
        self.cut.clear()

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the namespaces (their veths and the bridge go with them). Idempotent."""
        if not self._created:
            return
        for ns in self.namespaces + [self.hub]:
            _run(["ip", "netns", "del", ns], check=False)
        _run(["ip", "link", "del", f"{self.tag}r"], check=False)
        self._created = False
