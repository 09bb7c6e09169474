"""Certificates and TLS-serving ``beanraft serve`` processes for the TLS tests.

``Pki`` makes private CAs with trustme and writes certificates and keys (keys 0600, as
``beanraft serve`` demands) into a directory; ``TlsNode`` is one ``beanraft serve`` child with
its log in a file, ready once a TLS client gets ``USING default`` from it.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import trustme

from beanraft.node import launcher

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0


class Pki:
    """Two unrelated CAs (``ca`` is the one the nodes' certificates come from) in ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca, self.other_ca = trustme.CA(), trustme.CA()
        self.ca_file = self.root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_files(self, name: str, ca: trustme.CA | None = None,
                     expired: bool = False) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost (chain, then key) written as NAME.pem and
        NAME.key; ``expired``: it expired yesterday."""
        kwargs = {}
        if expired:
            now = datetime.datetime.now(datetime.timezone.utc)
            kwargs = {"not_before": now - datetime.timedelta(days=30),
                      "not_after": now - datetime.timedelta(days=1)}
        issued = (ca or self.ca).issue_cert(HOST, "localhost", **kwargs)
        return self._write(name, issued)

    def client_files(self, name: str, ca: trustme.CA | None = None) -> tuple[Path, Path]:
        return self._write(name, (ca or self.ca).issue_cert(f"{name}@clients.beanraft.test"))

    def _write(self, name: str, issued) -> tuple[Path, Path]:
        cert, key = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        os.chmod(key, 0o600)
        return cert, key

    def client_context(self, ca: trustme.CA | None = None,
                       cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """A client context that trusts ``ca`` (the nodes' CA by default), with a certificate."""
        context = ssl.create_default_context()
        (ca or self.ca).configure_trust(context)
        if cert is not None:
            context.load_cert_chain(*map(str, cert))
        return context


def tls_flags(cert: Path, key: Path, client_ca: Path | None = None) -> list[str]:
    flags = ["--tls-cert", str(cert), "--tls-key", str(key)]
    return flags + (["--tls-client-ca", str(client_ca)] if client_ca else [])


def tls_connect(port: int, context: ssl.SSLContext, timeout_s: float = 3.0,
                host: str = HOST) -> ssl.SSLSocket:
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def exchange(sock: socket.socket, data: bytes, expect_len: int | None = None,
             timeout_s: float = 3.0) -> bytes:
    """Send ``data``; read until a CRLF-terminated reply (of ``expect_len`` bytes if given)."""
    sock.sendall(data)
    sock.settimeout(timeout_s)
    reply = b""
    while not reply.endswith(b"\r\n") or (expect_len is not None and len(reply) < expect_len):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def http_get(url: str, context: ssl.SSLContext | None = None, timeout_s: float = 5.0) -> bytes:
    """GET ``url`` (https with ``context``), bypassing any proxy; raises OSError."""
    handlers = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    with urllib.request.build_opener(*handlers).open(url, timeout=timeout_s) as reply:
        return reply.read()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without BEANRAFT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEANRAFT_")}
    return {**env, **extra}


class TlsNode(launcher.ServeProcess):
    """One ``beanraft serve`` with TLS flags; ``wait_ready`` probes it through TLS."""

    def __init__(self, spec: launcher.NodeSpec, peers, flags, workdir: Path, env=None):
        super().__init__(spec, peers, extra_args=flags, log_path=Path(workdir) / f"{spec.name}.log",
                         env=env)

    def wait_ready(self, context: ssl.SSLContext, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.alive(), f"{self.name} exited:\n{self.log_text(4000)}"
            try:
                with tls_connect(self.spec.client_port, context, timeout_s=1.0) as sock:
                    if exchange(sock, b"list-tube-used\r\n", timeout_s=1.0) == b"USING default\r\n":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout_s} s:\n{self.log_text(4000)}")


def single_node(workdir: Path, name: str, flags, context: ssl.SSLContext) -> TlsNode:
    """A started, ready single node with an HTTP port."""
    client, http = launcher.free_ports(2)
    spec = launcher.NodeSpec(name, HOST, client, None, http, Path(workdir) / name)
    node = TlsNode(spec, [], flags, workdir)
    node.start()
    try:
        node.wait_ready(context)
    except BaseException:
        node.terminate()
        raise
    return node
