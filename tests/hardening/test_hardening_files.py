"""A node keeps its files to itself and its log to what matters (issue 9, defect 8).

Method: real ``beanraft serve`` processes, started from a test process whose umask is the usual
022. One durable single node (``-V``, so DEBUG lines show, and snapshots every 100 entries) takes
enough puts to write a snapshot; every directory and file under its data directory is then
checked for 0700 and 0600, also after a graceful stop. The same node is sent requests that are not
HTTP on its HTTP port, and its log must show one DEBUG line for each and no ERROR or traceback.
Secret files of several modes are given to ``beanraft serve``: one that group or others may read
is refused at start with a message that names the file and the fix; ``beanraft secret > FILE``
makes a file that ``serve`` accepts. Finally a three-node cluster loses two members while a
client pipelines puts through the survivor, whose commits then fail; once the cluster is whole
again and the survivor's state has grown enough for a full garbage collection, its log must hold
no "Future exception was never retrieved".
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time

import pytest
from cluster.cluster_harness import (Cluster, LineClient, beanraft_argv, clean_env, free_ports,
                                     http_get, wait_for)

NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS client hello
    b"GET /status HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
    b"G=ET /status HTTP/1.1\r\n\r\n",
]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A single node with a data directory that an operator made 0755 beforehand."""
    workdir = tmp_path_factory.mktemp("files")
    os.mkdir(workdir / "n1", 0o755)
    os.chmod(workdir / "n1", 0o755)
    cluster = Cluster(workdir, size=1, extra_args=("-V", "--snapshot-entries", "100"))
    try:
        cluster.start()
        yield cluster.nodes[0]
    finally:
        cluster.stop()


def modes_under(directory) -> dict[str, str]:
    """{relative path: octal mode} of the directory itself and everything below it."""
    found = {".": oct(stat.S_IMODE(os.stat(directory).st_mode))}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = oct(stat.S_IMODE(os.lstat(path).st_mode))
    return found


def wrong_modes(directory) -> dict[str, str]:
    wrong = {}
    for rel, mode in modes_under(directory).items():
        is_dir = os.path.isdir(os.path.join(directory, rel))
        if mode != (oct(0o700) if is_dir else oct(0o600)):
            wrong[rel] = mode
    return wrong


def test_the_data_directory_is_0700_and_every_file_the_node_writes_is_0600(node):
    with LineClient(node.client_address) as client:
        for i in range(300):  # one entry each: the journal passes 100 entries, a snapshot follows
            client.put(b"secret payload %d" % i)
    wait_for("a snapshot in the data directory",
             lambda: any(name.endswith("snapshot") for name in os.listdir(node.data_dir)),
             timeout_s=20, describe=lambda: str(os.listdir(node.data_dir)))
    names = set(modes_under(node.data_dir))
    assert {"lock", "raft.journal", "raft.journal.meta", "raft.snapshot"} <= names, names
    assert wrong_modes(node.data_dir) == {}, modes_under(node.data_dir)


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        for _read in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def test_requests_that_are_not_http_are_logged_as_one_debug_line_each_and_never_as_errors(node):
    before = len(node.log_text(10 ** 8))
    for data in NOT_HTTP:
        reply = send_raw(node.ports.http, data)
        status_line = reply.split(b"\r\n", 1)[0]
        assert reply == b"" or status_line.split()[1:2] in ([b"400"], [b"431"]), reply[:200]
    assert node.http("/healthz")[0] == 200
    time.sleep(0.3)
    log = node.log_text(10 ** 8)[before:]
    lines = [line for line in log.splitlines() if "beanraft.http" in line or "aiohttp" in line]
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
    continued = [line for line in log.splitlines() if line and not line[:2].isdigit()]
    assert continued == [], log[-4000:]  # every log record is one line
    assert all(len(line) < 400 for line in lines), lines
    bad = [line for line in lines if "Error handling request" in line]
    assert len(bad) == len(NOT_HTTP), lines
    assert all(" DEBUG " in line for line in bad), bad


def serve_with_secret(tmp_path, mode: int) -> subprocess.CompletedProcess:
    """``beanraft serve`` as a cluster member whose secret file has ``mode``; it must exit."""
    secret = tmp_path / f"secret-{mode:o}"
    secret.write_text("a-cluster-secret-for-this-test\n")
    os.chmod(secret, mode)
    a, b = free_ports(2)
    return subprocess.run(
        beanraft_argv() + ["serve", "-l", "127.0.0.1", "-p", "0", "--raft", f"127.0.0.1:{a}",
                           "--peer", f"127.0.0.1:{b}", "--cluster-secret-file", str(secret)],
        capture_output=True, text=True, timeout=60, env=clean_env())


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=lambda mode: f"{mode:04o}")
def test_a_secret_file_that_group_or_others_may_access_is_refused_at_start_naming_the_file_and_fix(
        tmp_path, mode):
    result = serve_with_secret(tmp_path, mode)
    assert result.returncode != 0
    message = result.stderr
    path = str(tmp_path / f"secret-{mode:o}")
    assert path in message and f"{mode:04o}" in message and f"chmod 600 {path}" in message, message


def start_single(secret_path, tmp_path) -> subprocess.Popen:
    port, http = free_ports(2)
    process = subprocess.Popen(
        beanraft_argv() + ["serve", "-l", "127.0.0.1", "-p", str(port), "-b", str(tmp_path / "d"),
                           "--http", f"127.0.0.1:{http}", "--cluster-secret-file", str(secret_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    process.http_port = http
    return process


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=lambda mode: f"{mode:04o}")
def test_a_secret_file_only_its_owner_may_read_is_accepted(tmp_path, mode):
    secret = tmp_path / "secret"
    secret.write_text("a-cluster-secret-for-this-test\n")
    os.chmod(secret, mode)
    process = start_single(secret, tmp_path)
    try:
        wait_for("the node to serve", lambda: process.poll() is not None
                 or http_get(process.http_port, "/healthz")[0] == 200, timeout_s=30)
        assert process.poll() is None, process.stderr.read().decode()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_beanraft_secret_redirected_to_a_file_makes_it_owner_only_under_a_umask_of_022(tmp_path):
    secret = tmp_path / "cluster-secret"
    command = " ".join(beanraft_argv()) + f" secret > {secret}"
    subprocess.run(["sh", "-c", f"umask 022 && {command}"], check=True, timeout=60, env=clean_env())
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 32


def test_the_files_stay_0600_after_a_graceful_stop(node):
    node.stop()
    assert wrong_modes(node.data_dir) == {}, modes_under(node.data_dir)


def fill(node, count: int, chunk: int = 2000) -> None:
    put = b"put 0 0 600 4\r\nfill\r\n"
    with LineClient(node.client_address, timeout_s=60) as client:
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            client.send(put * n)
            for _ in range(n):
                assert client.read_line().startswith(b"INSERTED ")


def test_commits_that_fail_leave_no_future_exception_was_never_retrieved_in_the_log(tmp_path):
    cluster = Cluster(tmp_path, size=3, extra_args=("--commit-timeout", "1.5"))
    try:
        cluster.start()
        survivor = cluster.followers()[0]
        others = [node for node in cluster.nodes if node is not survivor]
        with LineClient(survivor.client_address, timeout_s=30) as client:
            client.put(b"before")
            for other in others:
                other.kill()
            put = b"put 0 0 60 5\r\nafter\r\n"
            client.send(put * 40)  # pipelined: one waits for its commit, the rest are queued
            with pytest.raises((ConnectionError, TimeoutError)):
                for _ in range(40):
                    client.read_line(timeout_s=20)
        wait_for("the survivor to give up and close the connection",
                 lambda: "outcome of a command unknown" in survivor.log_text(10 ** 8), timeout_s=20)
        # The abandoned futures sit in reference cycles (their exceptions' tracebacks), so asyncio
        # only warns when a full garbage collection finds them. 20,000 new jobs in the survivor's
        # state (about half as many objects again as a node starts with) make one happen.
        for other in others:
            other.start()
        cluster.wait_ready()
        fill(survivor, 20_000)
        time.sleep(1.0)
        log = survivor.log_text(10 ** 8)
        assert "exception was never retrieved" not in log, log[-6000:]
    finally:
        cluster.stop()
