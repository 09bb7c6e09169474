"""A mutual-TLS client certificate's subject names a principal: its connection is authenticated
from the start, without a token; a certificate no principal names must still send ``auth``.

Method: one real ``beanraft serve`` with --tls-cert, --tls-key, --tls-client-ca and --auth-file;
certificates from a private CA made by trustme in the test; raw commands over TLS sockets.
"""

from __future__ import annotations

import pytest
from authkit import Principals

from beanraft.node import launcher
from tls.tlskit import Pki, exchange, single_node, tls_connect, tls_flags

SUBJECT = "O=Example,OU=Workers,CN=worker-1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtls")
    pki = Pki(root / "pki")
    worker = pki._write("worker-1", pki.ca.issue_cert(
        "worker-1@clients.beanraft.test", common_name="worker-1", organization_name="Example",
        organization_unit_name="Workers"))
    stranger = pki.client_files("stranger")
    team = Principals()
    team.add("worker", subject=SUBJECT, token=False, consume=["jobs"])
    operator_token = team.add("operator", administer=["*"])
    auth_file = team.write(root / "auth.toml")
    flags = tls_flags(*pki.server_files("node"), pki.ca_file) + ["--auth-file", str(auth_file)]
    node = single_node(root, "mtls", flags, pki.client_context(cert=worker))
    try:
        yield node, pki, worker, stranger, operator_token
    finally:
        launcher.stop_all([node])


def test_a_certificate_subject_authenticates_its_principal_without_a_token(setup):
    node, pki, worker, _stranger, _token = setup
    with tls_connect(node.spec.client_port, pki.client_context(cert=worker)) as sock:
        assert exchange(sock, b"watch jobs\r\n") == b"WATCHING 2\r\n"
        assert exchange(sock, b"watch other\r\n") == b"PERMISSION_DENIED\r\n"
        assert exchange(sock, b"use jobs\r\nput 0 0 60 1\r\nx\r\n", 30) == \
            b"USING jobs\r\nPERMISSION_DENIED\r\n"  # the worker consumes, it does not produce


def test_a_certificate_no_principal_names_still_needs_a_token(setup):
    node, pki, _worker, stranger, token = setup
    with tls_connect(node.spec.client_port, pki.client_context(cert=stranger)) as sock:
        assert exchange(sock, b"list-tube-used\r\n") == b"AUTH_REQUIRED\r\n"
        assert exchange(sock, f"auth operator {token}\r\n".encode()) == b"AUTHENTICATED\r\n"
        assert exchange(sock, b"stats-tube default\r\n").startswith(b"OK ")
