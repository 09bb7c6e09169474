"""TLS on a single node's client and HTTP ports: who gets in, who is refused, and a certificate
swapped on SIGHUP.

Method: real ``beanraft serve`` processes started with certificates that trustme makes for
the test (a private CA, plus an unrelated one). Clients are raw ``ssl`` sockets checked
byte for byte, ``beanraft.client`` with ``tls=``, and urllib for the HTTP port. Refusals are
checked on both sides: the client's handshake fails (or the connection is closed unanswered)
and the node's log holds one line for it, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
from tlskit import HOST, Pki, exchange, http_get, single_node, tls_connect, tls_flags

from beanraft.client import AsyncClient, Client
from beanraft.node import launcher

HANDSHAKE_TIMEOUT_S = 1.0  # what the nodes here are told, to test the bound quickly


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(pki, tmp_path_factory):
    flags = tls_flags(*pki.server_files("node")) + [
        "--tls-handshake-timeout", str(HANDSHAKE_TIMEOUT_S)]
    started = single_node(tmp_path_factory.mktemp("tls"), "tls", flags, pki.client_context())
    yield started
    started.terminate()


@pytest.fixture(scope="module")
def mtls_node(pki, tmp_path_factory):
    flags = tls_flags(*pki.server_files("mnode"), client_ca=pki.ca_file)
    context = pki.client_context(cert=pki.client_files("probe"))
    started = single_node(tmp_path_factory.mktemp("mtls"), "mtls", flags, context)
    yield started
    started.terminate()


def wait_for_log(node, text: str, timeout_s: float = 5.0, count: int = 1) -> str:
    """The node's log once ``text`` is in it ``count`` times."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = node.log_text(200_000)
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log of {node.name}:\n{node.log_text(3000)}")


def closed_unanswered(sock: socket.socket, timeout_s: float = 3.0) -> bool:
    """The peer closed (or reset) the connection without sending a byte."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def refused_after_handshake(sock: ssl.SSLSocket) -> bool:
    """With TLS 1.3 the server judges the client's certificate after the client's side of the
    handshake is done: the refusal shows at the first read, as an alert or a closed socket."""
    try:
        return exchange(sock, b"list-tube-used\r\n") == b""
    except (ssl.SSLError, ConnectionResetError):
        return True


def test_a_raw_tls_socket_gets_exact_beanstalkd_replies(node, pki):
    with tls_connect(node.spec.client_port, pki.client_context()) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.compression() is None
        assert exchange(sock, b"use tls\r\n") == b"USING tls\r\n"
        inserted = exchange(sock, b"put 0 0 60 5\r\nhello\r\n")
        assert inserted.startswith(b"INSERTED ")
        job_id = inserted.split()[1]
        assert exchange(sock, b"watch tls\r\n") == b"WATCHING 2\r\n"
        reserved = b"RESERVED " + job_id + b" 5\r\nhello\r\n"
        assert exchange(sock, b"reserve-with-timeout 0\r\n", len(reserved)) == reserved
        assert exchange(sock, b"delete " + job_id + b"\r\n") == b"DELETED\r\n"


def test_a_tls_client_that_hangs_up_ends_its_connection_without_a_warning(node, pki):
    """asyncio's TLS transport cannot half-close: a node that asked it to keep writing after the
    client's EOF logged a WARNING for every client that hung up."""
    sock = tls_connect(node.spec.client_port, pki.client_context())
    assert exchange(sock, b"use hangup\r\n") == b"USING hangup\r\n"
    sock.close()
    with tls_connect(node.spec.client_port, pki.client_context()) as probe:
        assert exchange(probe, b"stats\r\n").startswith(b"OK ")  # the hang-up was handled
    time.sleep(0.3)
    assert "eof_received" not in node.log_text(200_000)


def test_beanraft_client_with_a_context_puts_and_reserves(node, pki):
    with Client((HOST, node.spec.client_port), use="c", watch="c", tls=pki.client_context(),
                failover_timeout=5) as client:
        job_id = client.put("over tls")
        job = client.reserve(timeout=1)
        assert (job.id, job.body) == (job_id, "over tls")
        client.delete(job)


def test_the_asyncio_client_with_a_context_puts_and_reserves(node, pki):
    async def cycle():
        client = AsyncClient((HOST, node.spec.client_port), use="a", watch="a",
                             tls=pki.client_context(), failover_timeout=5)
        await client.connect()
        try:
            job_id = await client.put("async over tls")
            job = await client.reserve(timeout=1)
            await client.delete(job)
            return job_id, job.id, job.body
        finally:
            await client.close()

    job_id, reserved_id, body = asyncio.run(cycle())
    assert (reserved_id, body) == (job_id, "async over tls")


def test_plaintext_on_the_tls_port_is_closed_at_once_with_one_log_line(node):
    with socket.create_connection((HOST, node.spec.client_port), timeout=3) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"list-tubes\r\n")
        assert closed_unanswered(sock)
    log = wait_for_log(node, f"with {HOST}:{port} failed")
    line = next(x for x in log.splitlines() if f"with {HOST}:{port} failed" in x)
    assert " INFO beanraft.accept: client port: TLS handshake" in line
    assert "WRONG_VERSION_NUMBER" in line  # refused for what it sent, not timed out
    assert "Traceback" not in log


def test_a_client_that_never_shakes_hands_is_dropped_after_the_timeout(node):
    with socket.create_connection((HOST, node.spec.client_port), timeout=3) as sock:
        started = time.monotonic()
        assert closed_unanswered(sock, timeout_s=HANDSHAKE_TIMEOUT_S + 5)
        waited = time.monotonic() - started
    assert HANDSHAKE_TIMEOUT_S * 0.9 <= waited < HANDSHAKE_TIMEOUT_S + 5


def test_a_client_that_trusts_another_ca_refuses_the_node(node, pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(node.spec.client_port, pki.client_context(ca=pki.other_ca))
    with pytest.raises(Exception) as caught:
        Client((HOST, node.spec.client_port), tls=pki.client_context(ca=pki.other_ca),
               failover_timeout=1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


def test_the_http_port_serves_status_over_tls_only(node, pki):
    url = f"https://{HOST}:{node.spec.http_port}/status"
    assert json.loads(http_get(url, pki.client_context()))["ready"] is True
    with pytest.raises(OSError):
        http_get(f"http://{HOST}:{node.spec.http_port}/status")
    assert "Traceback" not in node.log_text(200_000)


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_node, pki):
    with tls_connect(mtls_node.spec.client_port, pki.client_context()) as sock:
        assert refused_after_handshake(sock)
    log = wait_for_log(mtls_node, "PEER_DID_NOT_RETURN_A_CERTIFICATE")
    assert "Traceback" not in log


def test_mutual_tls_refuses_a_certificate_from_another_ca(mtls_node, pki):
    stranger = pki.client_context(cert=pki.client_files("stranger", ca=pki.other_ca))
    with tls_connect(mtls_node.spec.client_port, stranger) as sock:
        assert refused_after_handshake(sock)
    wait_for_log(mtls_node, "CERTIFICATE_VERIFY_FAILED")


def test_mutual_tls_serves_a_client_with_a_certificate_from_its_ca(mtls_node, pki):
    context = pki.client_context(cert=pki.client_files("worker"))
    with Client((HOST, mtls_node.spec.client_port), use="m", watch="m", tls=context,
                failover_timeout=5) as client:
        client.put("mutual")
        assert client.reserve(timeout=1).body == "mutual"


def test_a_key_readable_by_others_stops_serve_with_a_usage_error(pki, tmp_path):
    cert, key = pki.server_files("loose")
    os.chmod(key, 0o644)
    result = subprocess.run([*launcher.beanraft_program(), "serve", "-l", HOST, "-p", "0",
                             *tls_flags(cert, key)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"--tls-key {key} is accessible by group or others (mode 0644)" in result.stderr


def test_sighup_swaps_the_certificate_and_keeps_open_connections(pki, tmp_path):
    cert, key = pki.server_files("swap")
    node = single_node(tmp_path, "swap", tls_flags(cert, key), pki.client_context())
    try:
        old = tls_connect(node.spec.client_port, pki.client_context())
        assert exchange(old, b"use before\r\n") == b"USING before\r\n"
        # The new certificate comes from another CA: who sees which one is unambiguous.
        new_cert, new_key = pki.server_files("swap-next", ca=pki.other_ca)
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        node.send(signal.SIGHUP)
        wait_for_log(node, "TLS certificates reloaded")
        assert exchange(old, b"list-tube-used\r\n") == b"USING before\r\n"
        with tls_connect(node.spec.client_port, pki.client_context(ca=pki.other_ca)) as fresh:
            assert exchange(fresh, b"list-tube-used\r\n") == b"USING default\r\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(node.spec.client_port, pki.client_context())

        # A broken file on the next SIGHUP: one ERROR line, the swapped-in certificate stays.
        cert.write_text("not a certificate\n")
        node.send(signal.SIGHUP)
        wait_for_log(node, "TLS certificates not reloaded")
        with tls_connect(node.spec.client_port, pki.client_context(ca=pki.other_ca)) as fresh:
            assert exchange(fresh, b"list-tube-used\r\n") == b"USING default\r\n"

        # An expired certificate is served if the operator installs one; clients refuse it.
        expired_cert, expired_key = pki.server_files("expired", ca=pki.other_ca, expired=True)
        os.replace(expired_cert, cert)
        os.replace(expired_key, key)
        node.send(signal.SIGHUP)
        wait_for_log(node, "TLS certificates reloaded", count=2)
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            tls_connect(node.spec.client_port, pki.client_context(ca=pki.other_ca))
        assert "certificate has expired" in str(caught.value)
        assert exchange(old, b"list-tube-used\r\n") == b"USING before\r\n"
        old.close()
        assert node.alive() and "Traceback" not in node.log_text(200_000)
    finally:
        node.terminate()
