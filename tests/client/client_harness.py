"""Servers for the beanraft.client tests: a real beanstalkd 1.12 or a real BeanRaft node as a
child process (stopped by its PID), and the address helpers the client tests share."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from cluster.cluster_harness import HOST, beanraft_argv, clean_env, die_with_parent, free_ports

BEANSTALKD = "/usr/bin/beanstalkd"
READY_TIMEOUT_S = 20.0
_TUBES = itertools.count(1)


def unique_tube(hint: str) -> str:
    """A tube name no other test of the run uses."""
    cleaned = "".join(c if c.isalnum() else "-" for c in hint)[:40].strip("-")
    return f"t{next(_TUBES)}-{cleaned}"


class ServerProcess:
    """beanstalkd or a single ``beanraft serve`` on 127.0.0.1:<free port>."""

    def __init__(self, kind: str, workdir: Path, *args: str):
        self.kind = kind
        self.workdir = Path(workdir)
        self.port = free_ports(1)[0]
        listen = ["-l", HOST, "-p", str(self.port)]
        if kind == "beanstalkd":
            self.argv = [BEANSTALKD, *listen, *args]
        else:
            self.argv = [*beanraft_argv(), "serve", *listen, "-b", str(self.workdir / "data"), *args]
        self.log_path = self.workdir / f"{kind}.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> "ServerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=clean_env(),
                                            preexec_fn=die_with_parent)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.kind} exited: {self.log_path.read_text()}"
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.sendall(b"list-tube-used\r\n")
                    if sock.recv(64) == b"USING default\r\n":
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.kind} not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def addresses_of(cluster) -> list[tuple[str, int]]:
    return [node.client_address for node in cluster.nodes]


def address_of(node) -> str:
    host, port = node.client_address
    return f"{host}:{port}"


class CuttableProxy:
    """A TCP proxy in front of one node that can swallow the node's replies and then hang up on
    the client while keeping the node's side open -- what a client sees when a node dies after
    it committed a command but before its reply left the machine."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server((HOST, 0))
        self.address = self.listener.getsockname()
        self.swallow = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                if not (replies and self.swallow.is_set()):
                    sink.sendall(data)
            except OSError:
                return

    def hang_up_on_clients(self) -> None:
        """Reset every client side; the node's sides stay open (closed by ``close``)."""
        for client, _server in self.pairs:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()

    def close(self) -> None:
        self.listener.close()
        for client, server in self.pairs:
            client.close()
            server.close()
