"""The stunnel section of docs/how-to/tls.md, run as the page shows it: greenstalk, which speaks
only plaintext, works with a TLS node through a local stunnel in client mode, and stunnel refuses
a node it cannot verify.

Method: the ``ini`` block is read from the page; only its ports, its host name (the test's
certificates name ``localhost`` and 127.0.0.1, not q1.example.net) and its ``/etc/stunnel/`` paths
are substituted. A real ``beanraft serve`` with ``--tls-client-ca`` (certificates from trustme,
made here) sits behind a real stunnel (Debian's ``stunnel4``), one per variant of the block,
each in the foreground as this process's child, stopped by its PID. Skipped only when stunnel is
not installed.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import greenstalk
import pytest
from tlskit import HOST, Pki, exchange, single_node, tls_connect, tls_flags

from beanraft.node import launcher

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "tls.md"
INI = re.compile(r"```ini\n(.*?)```", re.S)
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
START_TIMEOUT_S = 15.0

pytestmark = pytest.mark.skipif(STUNNEL is None,
                                reason="stunnel is not installed (apt-get install stunnel4)")


def page_config() -> str:
    blocks = INI.findall(PAGE.read_text())
    assert len(blocks) == 1, "the how-to should show exactly one stunnel configuration"
    return blocks[0]


def substituted(config: str, directory: Path, local_port: int, node_port: int) -> str:
    """The page's block for this machine: ports, the node's name and the files' directory."""
    replaced = (config.replace("127.0.0.1:11300", f"{HOST}:{local_port}")
                .replace("q1.example.net:11300", f"{HOST}:{node_port}")
                .replace("q1.example.net", "localhost")
                .replace("/etc/stunnel/", f"{directory}/"))
    assert "11300" not in replaced and "example" not in replaced and "/etc/" not in replaced
    return replaced


class Stunnel:
    """One stunnel child running ``config`` in the foreground; its log is in a file."""

    def __init__(self, directory: Path, name: str, config: str):
        self.conf, self.log = directory / f"{name}.conf", directory / f"{name}.log"
        self.conf.write_text(config)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([STUNNEL, str(self.conf)], stdout=log,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=launcher.die_with_parent)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Configuration successful" not in self.log_text():
            assert self.process.poll() is None, f"stunnel exited:\n{self.log_text()}"
            assert time.monotonic() < deadline, f"stunnel not ready:\n{self.log_text()}"
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An mTLS node, and the page's stunnel block written for it with the right files in place."""
    pki = Pki(tmp_path_factory.mktemp("stunnel-pki"))
    flags = tls_flags(*pki.server_files("q1"), client_ca=pki.ca_file)
    worker = pki.client_files("worker")
    node = single_node(tmp_path_factory.mktemp("stunnel-node"), "q1", flags,
                       pki.client_context(cert=worker))
    directory = tmp_path_factory.mktemp("stunnel")
    shutil.copy(pki.ca_file, directory / "ca.pem")
    shutil.copy(worker[0], directory / "worker.pem")
    shutil.copy(worker[1], directory / "worker.key")
    pki.other_ca.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    yield directory, node, pki.client_context(cert=worker)
    node.terminate()


def test_greenstalk_through_the_pages_stunnel_config(setup):
    """As written: put, reserve and delete go through; then three variants that must be refused
    (the node's certificate from an unknown CA, another host name to check, no client
    certificate for a node that requires one) each close greenstalk's connection unanswered."""
    directory, node, context = setup
    config = page_config()
    assert "foreground = yes" in config and "verifyChain = yes" in config
    local_ports = launcher.free_ports(4)
    written = substituted(config, directory, local_ports[0], node.spec.client_port)
    variants = {
        "as-written": written,
        "wrong-ca": written.replace(f"{directory}/ca.pem", f"{directory}/other-ca.pem"),
        "other-host": written.replace("checkHost = localhost", "checkHost = q2.example.net"),
        "no-client-cert": "\n".join(line for line in written.splitlines()
                                    if not line.startswith(("cert =", "key ="))) + "\n",
    }
    assert len(set(variants.values())) == 4, "a variant did not change the block"
    tunnels = {}
    try:
        for port, (name, text) in zip(local_ports, variants.items()):
            text = text.replace(f"{HOST}:{local_ports[0]}", f"{HOST}:{port}")
            tunnels[name] = Stunnel(directory, name, text)
        for tunnel in tunnels.values():
            tunnel.wait_ready()
        ports = dict(zip(variants, local_ports))

        with greenstalk.Client((HOST, ports["as-written"]), use="emails",
                               watch="emails") as client:
            job_id = client.put("hello through stunnel")
            job = client.reserve(timeout=5)
            assert (job.id, job.body) == (job_id, "hello through stunnel")
            client.delete(job)
            with pytest.raises(greenstalk.NotFoundError):
                client.peek(job_id)

        for name in ("wrong-ca", "other-host", "no-client-cert"):
            with pytest.raises(ConnectionError):
                with greenstalk.Client((HOST, ports[name])) as client:
                    client.put("must not arrive")
                    pytest.fail(f"{name}: put went through:\n{tunnels[name].log_text()}")
        for name in ("wrong-ca", "other-host"):
            log = tunnels[name].log_text()
            assert "Rejected by CERT" in log and "certificate verify failed" in log, log
    finally:
        for tunnel in tunnels.values():
            tunnel.stop()

    with tls_connect(node.spec.client_port, context) as sock:
        head = exchange(sock, b"stats\r\n", timeout_s=5.0)
        assert head.startswith(b"OK "), head
        size = int(head.split(b"\r\n")[0].split()[1])
        expect = len(head.split(b"\r\n")[0]) + 2 + size + 2
        stats = head if len(head) >= expect else head + exchange(
            sock, b"", expect_len=expect - len(head), timeout_s=5.0)
    assert b"\ncmd-put: 1\n" in stats and b"\ntotal-jobs: 1\n" in stats, \
        f"a refused put reached the node:\n{stats!r}"
