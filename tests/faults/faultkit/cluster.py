"""A 3-node BeanRaft cluster of real ``beanraft serve`` processes that a test can hurt.

Two layouts:
* ``loopback``: every node on 127.0.0.1 with ports of its own (raft ports below 32768, as
  pysyncobj needs). Needs no privileges; faults are kill -9 and SIGSTOP only.
* ``netns``: every node in a network namespace of its own (``netns.Network``), all on the same
  ports at 10.213.X.i, so a link can be cut while both ends keep running. With ``tmpfs_mb`` each
  node's -b directory is a tmpfs of that size, which the nemesis can fill up.

Processes are only ever signalled by their own pid. A node's identity is its --raft address,
which stays the same across restarts (same flags, same -b directory).
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from beanraft.node import launcher
from beanraft.node.launcher import ServeProcess, node_name

from .netns import Network

# Every node is started from this one long-lived thread: Linux sends the parent-death signal
# when the *thread* that forked the child exits, so a node started from a short-lived thread
# (the nemesis restarting it) would be killed when that thread ends.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")


def freeze_code(into: Path) -> dict[str, str]:
    """Copy the beanraft packages into ``into`` and return the environment that makes a node
    import them from there.

    The working tree may change while a run lasts (others edit it); a node restarted mid-run
    must run the same code as its peers, or replicas could differ for reasons of our making.
    """
    import importlib

    source = Path(importlib.import_module("beanraft.node").__file__).resolve().parent.parent
    target = into / "beanraft"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    for package in ("node", "jobs", "replication", "protocol"):
        shutil.copytree(source / package, target / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    paths = [str(into)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def pick_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports below 32768 that were free a moment ago."""
    return launcher.free_ports(count)


@dataclass
class NodeSpec(launcher.NodeSpec):
    """Where one node listens and keeps its data, and where its output goes."""

    log_path: Path | None = None


class NodeProcess(ServeProcess):
    """One node: start, kill -9, SIGSTOP/SIGCONT, restart with the same flags and data."""

    def __init__(self, spec: NodeSpec, peers: list[str], options: list[str],
                 env: dict[str, str] | None = None):
        # Frozen code is found through PYTHONPATH, which only ``python -m`` honours for certain.
        program = [sys.executable, "-m", "beanraft.node"] if env else None
        super().__init__(spec, peers, extra_args=["--insecure", *options], program=program,
                         env=env, log_path=spec.log_path,
                         spawn=lambda popen: _SPAWNER.submit(popen).result())
        self.stopped = False

    def running(self) -> bool:
        return self.alive()

    def start(self) -> None:
        super().start()
        self.stopped = False

    def kill(self) -> None:
        """SIGKILL (resuming first is not needed: SIGKILL ends a stopped process too), then reap."""
        super().kill()
        self.stopped = False

    def pause(self) -> None:
        super().pause()
        self.stopped = True

    def resume(self) -> None:
        super().resume()
        self.stopped = False

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text(chars)


class Cluster:
    """Three nodes and (in the netns layout) their private network and tmpfs data directories."""

    def __init__(self, workdir: Path, layout: str = "loopback", size: int = 3,
                 commit_timeout_s: float = 10.0, node_grace_s: float = 5.0,
                 tmpfs_mb: int | None = None, extra_options: list[str] | None = None,
                 freeze: bool = True):
        assert layout in ("loopback", "netns")
        self.workdir = Path(workdir)
        self.layout = layout
        self.commit_timeout_s = commit_timeout_s
        self.node_grace_s = node_grace_s
        self.network: Network | None = None
        self.mounts: list[Path] = []
        self.tmpfs_mb = tmpfs_mb
        self.freeze = freeze
        self._size = size
        self.admin_token = secrets.token_hex(16)  # for the membership changes of the nemesis
        self._options = ["--admin-token-file", str(self.workdir / "admin-token"),
                         "--commit-timeout", str(commit_timeout_s),
                         "--node-grace", str(node_grace_s), *(extra_options or [])]
        self.nodes: list[NodeProcess] = []

    # -- setup and teardown ----------------------------------------------------------------

    def create(self) -> "Cluster":
        """Build the network and data directories and start every node (not waiting)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        token = self.workdir / "admin-token"
        token.write_text(self.admin_token + "\n")
        token.chmod(0o600)
        specs = self._specs()
        for spec in specs:
            spec.data_dir.mkdir(parents=True, exist_ok=True)
            if self.tmpfs_mb:
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_mb}m,mode=0700",
                                "tmpfs", str(spec.data_dir)], check=True, capture_output=True)
                self.mounts.append(spec.data_dir)
        env = freeze_code(self.workdir / "code") if self.freeze else None
        for spec in specs:
            peers = [s.raft for s in specs if s is not spec]
            self.nodes.append(NodeProcess(spec, peers, self._options, env))
        for node in self.nodes:
            node.start()
        return self

    def _specs(self) -> list[NodeSpec]:
        specs = []
        if self.layout == "netns":
            self.network = Network(self._size).create()
            for i, host in enumerate(self.network.addresses):
                specs.append(self._spec(i, host, 11300, 21300, 8300, self.network.exec_prefix(i)))
        else:
            # All below 32768: outside the ephemeral range, so no outgoing connection takes one.
            ports = pick_ports(3 * self._size)
            for i in range(self._size):
                client, raft, http = ports[3 * i: 3 * i + 3]
                specs.append(self._spec(i, "127.0.0.1", client, raft, http, []))
        return specs

    def _spec(self, i, host, client, raft, http, prefix) -> NodeSpec:
        name = node_name(i)
        return NodeSpec(name=name, host=host, client_port=client, raft_port=raft, http_port=http,
                        data_dir=self.workdir / name / "data", log_path=self.workdir / f"{name}.log",
                        exec_prefix=prefix)

    def post_mortem(self) -> None:
        """Keep evidence before teardown: each running node's thread stacks (when py-spy is
        installed) and a copy of every tmpfs data directory."""
        spy = shutil.which("py-spy")
        for node in self.nodes:
            if spy and node.running():
                node.resume()
                dump = subprocess.run([spy, "dump", "--pid", str(node.pid)], capture_output=True,
                                      text=True, timeout=60)
                with open(node.spec.log_path, "a") as log:
                    log.write(f"--- post-mortem py-spy dump of pid {node.pid}\n"
                              f"{dump.stdout}{dump.stderr}")
            if node.spec.data_dir in self.mounts:
                shutil.copytree(node.spec.data_dir, node.spec.data_dir.with_name("data.saved"),
                                dirs_exist_ok=True, ignore=shutil.ignore_patterns("filler"))

    def close(self) -> None:
        """Stop every node, unmount the tmpfs directories, delete the network. Idempotent."""
        for node in self.nodes:
            try:
                node.kill()
            except Exception:  # keep tearing down the rest
                pass
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        self.mounts.clear()
        if self.network is not None:
            self.network.close()

    def __enter__(self) -> "Cluster":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- observation -----------------------------------------------------------------------

    def node(self, name: str) -> NodeProcess:
        return next(n for n in self.nodes if n.name == name)

    def by_raft(self, address: str | None) -> NodeProcess | None:
        return next((n for n in self.nodes if n.spec.raft == address), None)

    def statuses(self, timeout_s: float = 1.0) -> dict[str, dict | None]:
        return {n.name: (n.status(timeout_s) if n.running() and not n.stopped else None)
                for n in self.nodes}

    def leader(self) -> NodeProcess | None:
        """The node that says it is leader with the highest term, if any answers."""
        best = None
        for node in self.nodes:
            doc = node.status() if node.running() and not node.stopped else None
            if doc and doc.get("role") == "leader":
                if best is None or doc["term"] > best[0]:
                    best = (doc["term"], node)
        return best[1] if best else None

    def wait_ready(self, timeout_s: float, nodes: list[NodeProcess] | None = None) -> bool:
        """Until every given node (default: all) is ready, agrees on one leader, and has applied
        everything that leader committed. False when ``timeout_s`` passes first."""
        nodes = nodes or self.nodes
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            docs = [n.status() for n in nodes]
            if all(d and d.get("ready") for d in docs):
                leaders = {d.get("leader") for d in docs}
                if len(leaders) == 1 and None not in leaders:
                    return True
            time.sleep(0.1)
        return False

    def wait_converged(self, timeout_s: float) -> dict[str, dict] | None:
        """Until all nodes report the same digest_index; return that round of /status documents
        (whose digests must then be equal), or None when ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            docs = {n.name: n.status(digest=True) for n in self.nodes}
            if all(docs.values()):
                indices = {d.get("digest_index") for d in docs.values()}
                if len(indices) == 1:
                    return docs
            time.sleep(0.1)
        return None

    # -- disk ------------------------------------------------------------------------------

    def fill_disk(self, node: NodeProcess) -> Path:
        """Fill ``node``'s tmpfs -b directory completely with a filler file; return its path."""
        assert node.spec.data_dir in self.mounts, "fill_disk needs tmpfs_mb"
        filler = node.spec.data_dir / "filler"
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            for _ in range(5):  # the node may free or take space meanwhile: top up
                st = os.statvfs(node.spec.data_dir)
                free = st.f_bavail * st.f_frsize
                if free == 0:
                    break
                size = os.fstat(fd).st_size
                try:
                    os.posix_fallocate(fd, size, free)
                except OSError:
                    pass
        finally:
            os.close(fd)
        return filler

    def free_disk(self, node: NodeProcess) -> None:
        try:
            os.unlink(node.spec.data_dir / "filler")
        except FileNotFoundError:
            pass
