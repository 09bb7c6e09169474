"""The admin CLI reaches a node whose client port speaks TLS: with the CA that signed the node
(``--tls-ca``), and with a client certificate when the node demands one (mutual TLS); without
them it fails with the status of an unreachable node, never with a traceback.

Method: real ``beanraft serve`` processes with certificates trustme makes for the module, and
the real ``beanraft`` command in subprocesses.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from tlskit import HOST, Pki, single_node, tls_flags

from beanraft.node import launcher


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_node(pki, tmp_path_factory):
    flags = tls_flags(*pki.server_files("mnode"), client_ca=pki.ca_file)
    context = pki.client_context(cert=pki.client_files("probe"))
    started = single_node(tmp_path_factory.mktemp("mtls"), "mtls", flags, context)
    yield started
    started.terminate()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(launcher.beanraft_program() + list(args), capture_output=True,
                          timeout=30)


def test_the_cli_puts_and_lists_over_mutual_tls(mtls_node, pki):
    address = f"{HOST}:{mtls_node.spec.client_port}"
    cert, key = pki.client_files("operator")
    tls = ["--address", address, "--tls-ca", str(pki.ca_file), "--tls-cert", str(cert),
           "--tls-key", str(key)]
    put = run("job", "put", "tls-tube", "hello", "--json", *tls)
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["tube"] == "tls-tube"
    assert "tls-tube" in json.loads(run("tube", "list", "--json", *tls).stdout)


def test_without_the_tls_options_the_cli_reports_an_unreachable_node(mtls_node, pki):
    address = f"{HOST}:{mtls_node.spec.client_port}"
    plain = run("tube", "list", "--address", address, "--timeout", "3")
    assert plain.returncode == 8 and b"Traceback" not in plain.stderr, plain.stderr
    no_cert = run("tube", "list", "--address", address, "--tls-ca", str(pki.ca_file))
    assert no_cert.returncode == 8 and b"Traceback" not in no_cert.stderr, no_cert.stderr
    wrong_ca = run("tube", "list", "--address", address, "--tls")
    assert wrong_ca.returncode == 8 and b"TLS with" in wrong_ca.stderr, wrong_ca.stderr


def test_top_reads_the_nodes_status_over_https_with_the_tls_options(mtls_node, pki, tmp_path):
    client = f"{HOST}:{mtls_node.spec.client_port}"
    http = f"{HOST}:{mtls_node.spec.http_port}"
    cert, key = pki.client_files("operator")
    svg = tmp_path / "top.svg"
    done = run("top", "--once", "--interval", "0.2", "--address", client, "--http", http,
               "--tls-ca", str(pki.ca_file), "--tls-cert", str(cert), "--tls-key", str(key),
               "--svg", str(svg))
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.decode().splitlines() if "leader" in line)
    assert "ready" in row and "unreachable" not in row
    assert svg.read_text().startswith("<svg") and "leader" in svg.read_text()
    # Without the TLS options neither port answers plain text: exit status 8, no traceback.
    plain = run("top", "--once", "--interval", "0.2", "--http", http, "--address", client)
    assert plain.returncode == 8 and b"Traceback" not in plain.stderr, plain
