"""One node with --auth-file and --admin-token-file: garbage before authentication changes nothing,
SIGHUP reloads the principals for the next command, the HTTP port takes the same principals'
tokens, and failed authentications are logged, counted on /metrics and slowed per address.

Method: one real ``beanraft serve`` process for the module (plain TCP, an HTTP port); raw bytes
over sockets bound to different 127.x source addresses; the replicated state compared through
/status?digest=1 and a root principal's stats; the auth file rewritten and SIGHUP sent.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
from authkit import Line, Principals
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from beanraft.node import launcher

HOST = "127.0.0.1"
ADMIN_TOKEN = "the-admin-token-of-the-http-port"


@pytest.fixture(scope="module")
def principals() -> Principals:
    team = Principals()
    team.add("producer", produce=["orders"])
    team.add("admin", administer=["*"])
    team.add("root", produce=["*"], consume=["*"], administer=["*"])
    return team


@pytest.fixture(scope="module")
def node(principals, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authnode")
    path = principals.write(workdir / "auth.toml")
    token_file = workdir / "admin-token"
    token_file.write_text(ADMIN_TOKEN)
    os.chmod(token_file, 0o600)
    client, http = launcher.free_ports(2)
    spec = launcher.NodeSpec("auth1", HOST, client, None, http, workdir / "data")
    process = launcher.ServeProcess(
        spec, [], extra_args=["--auth-file", str(path), "--admin-token-file", str(token_file)],
        log_path=workdir / "auth1.log")
    process.auth_path = path
    process.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.alive(), process.log_text()
            try:
                line = Line((HOST, client), timeout_s=2)
                if line.request(b"stats\r\n") == b"AUTH_REQUIRED\r\n":
                    line.close()
                    break
            except OSError:
                assert time.monotonic() < deadline, process.log_text()
                time.sleep(0.1)
        yield process
    finally:
        launcher.stop_all([process])


def address(node) -> tuple[str, int]:
    return (HOST, node.spec.client_port)


def root(node, principals) -> Line:
    line = Line(address(node))
    assert line.auth("root", principals.tokens["root"]) == b"AUTHENTICATED\r\n"
    return line


def http(node, method: str, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{HOST}:{node.spec.http_port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def settled_state(node, principals) -> tuple[bytes, dict]:
    """Once no connection but root's is open: the tube list and every tube's stats, and the
    server's stats."""
    line = root(node, principals)
    try:
        deadline = time.monotonic() + 20
        while True:
            stats = stats_of(line)
            if stats["current-connections"] == "1":
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.05)
        tubes = line.request(b"list-tubes\r\n")
        names = re.findall(rb"^- (.+)$", tubes, re.M)
        per_tube = b"".join(line.request(b"stats-tube %b\r\n" % name) for name in names)
        # Drop the figures that move on their own: pause-time-left.
        return tubes + re.sub(rb"pause-time-left: \d+", b"", per_tube), stats
    finally:
        line.close()


def stats_of(line: Line) -> dict:
    reply = line.request(b"stats\r\n")
    body = reply.split(b"\r\n", 1)[1].decode()
    return dict(row.split(": ", 1) for row in body.splitlines()[1:] if ": " in row)


# Lines a client could send before authenticating: commands of every kind, put bodies, broken
# auth lines and raw bytes.
COMMAND_LINES = st.sampled_from([
    b"put 0 0 60 3\r\nabc\r\n", b"put-key k1 0 0 60 1\r\nx\r\n", b"put 0 0 60 99999999\r\n",
    b"use orders\r\n", b"watch orders\r\n", b"reserve-with-timeout 0\r\n", b"delete 1\r\n",
    b"kick 100\r\n", b"pause-tube default 10\r\n", b"purge-tube default all\r\n",
    b"session-id\r\n", b"stats\r\n", b"list-tubes\r\n", b"auth root\r\n", b"auth  root x\r\n",
    b"auth root x y\r\n", b"auth " + b"r" * 65 + b" x\r\n", b"auth root " + b"t" * 129 + b"\r\n",
    b"auth root \x00\r\n", b"auth \xff\xfe x\r\n",
])
AUTH_LINES = st.builds(lambda name, token: b"auth %b %b\r\n" % (name, token),
                       st.sampled_from([b"root", b"admin", b"nobody", b"producer"]),
                       st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b))
RAW = st.binary(max_size=300).map(lambda b: b + b"\r\n")
SOURCES = (f"127.0.{a}.{b}" for a, b in itertools.product(range(1, 250), range(2, 250)))


# No shrinking: every example costs real round trips, and the example itself is printed.
@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
# Lines beanstalkd counts (and for which it burns a job id) although it rejects them.
@example(chunks=[b"put 0 0 60 3 x\r\nabc\r\n", b"pause-tube -x 5\r\n", b"put 0 0 60 99999999\r\n"])
@given(chunks=st.lists(st.one_of(COMMAND_LINES, COMMAND_LINES, AUTH_LINES, RAW), max_size=8))
def test_input_before_authentication_changes_nothing_and_crashes_nothing(node, principals, chunks):
    before, stats_before = settled_state(node, principals)
    # A fresh source address for every example: the failures of one do not slow the next.
    line = Line(address(node), timeout_s=15, source=next(SOURCES))
    line.send(b"".join(chunks))
    line.sock.shutdown(socket.SHUT_WR)  # the node answers everything, then hangs up
    received = b""
    while chunk := line.sock.recv(65536):
        received += chunk
    line.close()
    # Only error lines: "auth" with a real token cannot be drawn, and nothing else may run.
    replies = received.split(b"\r\n")
    assert replies[-1] == b"", received
    allowed = {b"AUTH_REQUIRED", b"AUTH_FAILED", b"BAD_FORMAT", b"UNKNOWN_COMMAND",
               b"JOB_TOO_BIG", b"EXPECTED_CRLF"}
    assert set(replies[:-1]) <= allowed, (chunks, replies)
    assert node.alive()
    after, stats_after = settled_state(node, principals)
    assert after == before, (chunks, replies)
    for key in ("total-jobs", "current-tubes", "current-jobs-ready", "cmd-put", "cmd-delete",
                "cmd-use", "cmd-watch", "cmd-kick", "cmd-pause-tube", "cmd-reserve-with-timeout"):
        assert stats_after[key] == stats_before[key], (key, chunks)


def test_failed_authentications_are_logged_counted_and_slowed_per_address(node, principals):
    metrics = http(node, "GET", "/metrics")[1]
    before = float(re.search(r"^beanraft_auth_failures_total (\S+)$", metrics, re.M).group(1))
    source = "127.9.9.9"
    line = Line(address(node), source=source)
    replies = [line.auth("producer", f"wrong{i}") for i in range(3)] + [line.auth("ghost", "x")]
    assert replies == [b"AUTH_FAILED\r\n"] * 4
    # The right token still works from that address, after its back-off.
    assert line.auth("producer", principals.tokens["producer"]) == b"AUTHENTICATED\r\n"
    line.close()
    log = node.log_text()
    assert f"authentication failed for principal producer from {source} (3 in a row" in log
    assert f"authentication failed for an unknown principal from {source} (4 in a row" in log
    assert principals.tokens["producer"] not in log
    metrics = http(node, "GET", "/metrics")[1]
    after = float(re.search(r"^beanraft_auth_failures_total (\S+)$", metrics, re.M).group(1))
    assert after >= before + 4


def test_the_http_port_takes_an_admin_principals_token_and_the_admin_token_file(node, principals):
    line = root(node, principals)
    reply = line.request(b"use orders\r\nput 0 0 60 1\r\nx\r\n", 2)
    job_id = int(re.search(rb"INSERTED (\d+)", reply).group(1))
    assert line.request(b"reserve-job %d\r\nbury %d 0\r\n" % (job_id, job_id), 2).endswith(
        b"BURIED\r\n")
    kick = f"/api/jobs/{job_id}/kick"
    assert http(node, "POST", kick)[0] == 401
    assert http(node, "POST", kick, "admin:wrong")[0] == 401
    assert http(node, "POST", kick, principals.tokens["admin"])[0] == 401  # the name is needed
    producer = "producer:" + principals.tokens["producer"]
    assert http(node, "POST", kick, producer) == (403, '{"reply": "PERMISSION_DENIED"}')
    assert http(node, "POST", kick, "admin:" + principals.tokens["admin"]) == (
        200, '{"reply": "KICKED"}')
    assert line.request(b"reserve-job %d\r\nbury %d 0\r\n" % (job_id, job_id), 2).endswith(
        b"BURIED\r\n")
    assert http(node, "POST", kick, ADMIN_TOKEN) == (200, '{"reply": "KICKED"}')
    assert http(node, "DELETE", f"/api/jobs/{job_id}", ADMIN_TOKEN) == (200, '{"reply": "DELETED"}')
    # The --admin-token-file's token is a principal on the client port too.
    admin_line = Line(address(node))
    assert admin_line.auth("admin-token", ADMIN_TOKEN) == b"AUTHENTICATED\r\n"
    assert admin_line.request(b"stats-tube default\r\n").startswith(b"OK ")
    admin_line.close()
    line.close()


def test_sighup_reloads_the_principals_for_the_next_command(node, principals):
    path = node.auth_path
    original = path.read_text()
    producer = Line(address(node))
    assert producer.auth("producer", principals.tokens["producer"]) == b"AUTHENTICATED\r\n"
    assert producer.request(b"use orders\r\nput 0 0 60 1\r\nx\r\n", 2).startswith(b"USING orders\r\nINSERTED")
    assert producer.request(b"use invoices\r\n") == b"PERMISSION_DENIED\r\n"
    changed = Principals()
    changed.entries = dict(principals.entries)
    changed.entries["producer"] = {**principals.entries["producer"], "produce": ["invoices"]}
    newcomer = changed.add("newcomer", consume=["invoices"])
    try:
        changed.write(path)
        # Five: the four of the file and the --admin-token-file's.
        signal_and_wait_for_log(node, "reloaded: 5 principals")
        # The open connection follows the new rules at its next command.
        assert producer.request(b"put 0 0 60 1\r\nx\r\n") == b"PERMISSION_DENIED\r\n"
        assert producer.request(b"use invoices\r\nput 0 0 60 1\r\nx\r\n", 2).startswith(
            b"USING invoices\r\nINSERTED")
        fresh = Line(address(node))
        assert fresh.auth("newcomer", newcomer) == b"AUTHENTICATED\r\n"
        assert fresh.request(b"watch invoices\r\n") == b"WATCHING 2\r\n"
        # A file that does not load keeps the principals in force.
        path.write_text("[principal.broken\n")
        signal_and_wait_for_log(node, "auth file not reloaded")
        assert fresh.request(b"watch invoices\r\n") == b"WATCHING 2\r\n"
        # A principal removed from the file is unauthenticated at its next command.
        principals.write(path)
        signal_and_wait_for_log(node, "reloaded: 4 principals")
        assert fresh.request(b"list-tube-used\r\n") == b"AUTH_REQUIRED\r\n"
        assert fresh.auth("newcomer", newcomer) == b"AUTH_FAILED\r\n"
        fresh.close()
    finally:
        path.write_text(original)
        os.chmod(path, 0o600)
        producer.close()


def signal_and_wait_for_log(node, text: str, timeout_s: float = 20.0) -> None:
    """Send SIGHUP and wait for one more ``text`` in the node's log than before."""
    seen = node.log_text(10**7).count(text)
    node.send(signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while node.log_text(10**7).count(text) <= seen:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{node.log_text(3000)}"
        time.sleep(0.05)


def test_connections_that_never_authenticate_write_nothing_to_the_log(node, principals):
    # Without an auth file every connection opens a session in the replicated state (OPEN, then
    # CLOSE): with one, strangers must not be able to make the node write by connecting.
    def commit_index() -> int:
        return json.loads(http(node, "GET", "/status")[1])["commit_index"]

    settled_state(node, principals)  # no other connection left open
    before = commit_index()
    for _ in range(40):  # the settling connection's own CLOSE, and /status's refresh
        time.sleep(0.25)
        before, previous = commit_index(), before
        if before == previous:
            break
    for i in range(20):
        line = Line(address(node), source=f"127.0.251.{i + 2}")
        assert line.request(b"use orders\r\n") == b"AUTH_REQUIRED\r\n"
        assert line.request(b"auth root wrong\r\n") == b"AUTH_FAILED\r\n"
        line.close()
    time.sleep(0.5)  # a CLOSE would be proposed as each connection ends
    assert commit_index() == before
    line = root(node, principals)  # authenticating opens the session: one entry at least
    assert line.request(b"use orders\r\n") == b"USING orders\r\n"
    line.close()
    deadline = time.monotonic() + 10
    while commit_index() == before:  # /status refreshes every few tenths of a second
        assert time.monotonic() < deadline, "nothing committed for an authenticated client"
        time.sleep(0.1)
