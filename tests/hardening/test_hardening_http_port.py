"""What a stranger on the HTTP port can cost a node: a bounded number of connections, each given
a bounded time and size for its request head, no sleeping attempt left behind when it hangs up,
no token in the log, and a dashboard that sends the token to no address a link can name.

Method: one real ``beanraft serve`` node (``-V``, an admin token, reads closed) attacked over real
loopback sockets. Connections that send nothing, half a head, one byte at a time, or too many
headers; more connections than the bound while the node's open-files limit is lowered (``prlimit``)
so that holding them all would leave nothing for the client port; a hundred refused attempts
whose clients hang up at once, from one address, before the right token from that address; a
malformed ``Authorization`` header. The dashboard runs in headless chromium (selenium, skipped
without /usr/bin/chromedriver) from a link that names a fake node, which records what it is sent.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cluster.cluster_harness import HOST, LineClient, wait_for
from floodkit import open_files
from polling import readable

from beanraft.node import http as node_http
from beanraft.node import http_connections, launcher

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "cluster")]
import test_cluster_dashboard as dashboard  # noqa: E402

browser = dashboard.browser  # headless chromium, for the last test

TOKEN = "http-port-token-0123456789"
HEAD_TIMEOUT_S = node_http.HEAD_TIMEOUT_S
MAX_CONNECTIONS = http_connections.MAX_CONNECTIONS

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A single node with an admin token, reads closed and DEBUG lines in its log."""
    workdir = tmp_path_factory.mktemp("http-port")
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    client, http = launcher.free_ports(2)
    spec = launcher.NodeSpec("n1", HOST, client, None, http, workdir / "n1")
    process = launcher.ServeProcess(
        spec, [], extra_args=("-V", "--admin-token-file", str(token_file),
                              "--http-read-token-required"),
        log_path=workdir / "n1.log")
    process.start()
    try:
        wait_for("the node serves", lambda: _answers(client), timeout_s=30)
        yield process, client, http
    finally:
        process.terminate()


def _answers(port: int) -> bool:
    try:
        with LineClient((HOST, port), timeout_s=2) as conn:
            return conn.request(b"list-tube-used") == b"USING default"
    except OSError:
        return False


def request(port: int, head: bytes, source: str = HOST, timeout_s: float = 10.0) -> bytes:
    """One request's whole answer (the server closes: ``Connection: close``)."""
    with socket.create_connection((HOST, port), timeout=timeout_s,
                                  source_address=(source, 0)) as sock:
        sock.sendall(head)
        answer = b""
        for _read in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def status_of(answer: bytes) -> int | None:
    parts = answer.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def closed_by_peer(sock: socket.socket) -> bool:
    """True if the node has closed this connection (EOF or reset); reads what it answered."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_connections_that_never_finish_a_request_head_are_closed_after_the_head_timeout(node):
    _process, _client, http = node
    idle = socket.create_connection((HOST, http))
    half = socket.create_connection((HOST, http))
    half.sendall(b"GET /status HTTP/1.1\r\n")
    trickle = socket.create_connection((HOST, http))
    kept = socket.create_connection((HOST, http))
    kept.sendall(b"GET /dashboard/app.css HTTP/1.1\r\nHost: x\r\n\r\n")
    kept.settimeout(5)
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")  # then idle, kept alive
    opened = time.monotonic()
    sockets = {"idle": idle, "half a head": half, "one byte at a time": trickle,
               "kept alive after an answer": kept}
    closed: dict[str, float] = {}
    head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000
    for sent in range(int((HEAD_TIMEOUT_S + 5) / 0.25)):
        if len(closed) == len(sockets):
            break
        if "one byte at a time" not in closed and sent < len(head):
            try:
                trickle.sendall(head[sent:sent + 1])
            except OSError:
                pass
        waiting = [sock for name, sock in sockets.items() if name not in closed]
        ready = readable(waiting, 0.25)
        for name, sock in sockets.items():
            if sock in ready and closed_by_peer(sock):
                closed[name] = round(time.monotonic() - opened, 1)
    for sock in sockets.values():
        sock.close()
    # Closed after HEAD_TIMEOUT_S, with room for a busy machine (they used to stay for an hour).
    assert set(closed) == set(sockets), f"still open after {HEAD_TIMEOUT_S + 5} s: " \
        f"{set(sockets) - set(closed)} (closed: {closed})"


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n" \
    % TOKEN.encode()


def padded(count: int, size: int) -> bytes:
    """A whole request head with ``count`` more headers whose values are ``size`` bytes."""
    return HEAD + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * size) for i in range(count)) + b"\r\n"


def answered(port: int, head: bytes) -> int | None:
    """The status the node answers ``head`` with; None when it closes the connection unanswered."""
    try:
        return status_of(request(port, head))
    except (ConnectionResetError, BrokenPipeError):
        return None


def test_a_request_head_with_more_headers_than_the_bound_is_refused(node):
    _process, _client, http = node
    assert answered(http, padded(node_http.MAX_HEADERS - 4, 1)) == 200
    assert answered(http, padded(node_http.MAX_HEADERS, 1)) in (400, 431)


def test_a_request_head_larger_than_the_bound_closes_its_connection_unanswered(node):
    _process, _client, http = node
    field = node_http.MAX_FIELD_BYTES - 100  # each header within aiohttp's own bound
    below = (http_connections.MAX_REQUEST_BYTES - 1000) // field
    assert answered(http, padded(below, field)) == 200
    assert answered(http, padded(below + 2, field)) is None


def test_a_request_body_larger_than_the_bound_is_refused_with_413(node):
    _process, _client, http = node
    body = b'"' + b"x" * 20_000 + b'"'  # a JSON string, past the bound on bodies
    assert node_http.MAX_BODY_BYTES < len(body) < http_connections.MAX_REQUEST_BYTES - 1000
    head = b"POST /admin/leader/transfer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" \
           b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (TOKEN.encode(), len(body))
    assert answered(http, head + body) == 413
    assert answered(http, head.replace(b"%d" % len(body), b"3") + b'"x"') == 400  # not an object


def test_connections_past_the_bound_close_the_oldest_and_leave_descriptors_to_the_client_port(
        node):
    process, client, http = node
    pid = process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    base = open_files(pid)
    # Room for every HTTP connection the bound allows and a few dozen more: holding one more
    # HTTP connection per flood connection would take them all.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (base + MAX_CONNECTIONS + 64, limits[1]))
    flood: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS + 200):
            sock = socket.socket()
            sock.settimeout(5)
            sock.connect((HOST, http))  # completed by the kernel from the backlog if need be
            sock.sendall(b"GET /status HTTP/1.1\r\n")
            flood.append(sock)
        # A newcomer is served (it takes the place of the oldest waiting connection) ...
        answer = request(http, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               b"Authorization: Bearer %s\r\n\r\n" % TOKEN.encode(), timeout_s=5)
        assert status_of(answer) == 200, answer[:200]
        assert open_files(pid) <= base + MAX_CONNECTIONS + 32, (open_files(pid), base)
        # ... and so is every client of the client port.
        for i in range(8):
            with LineClient((HOST, client), timeout_s=5) as conn:
                job = conn.put(b"during the flood %d" % i)
                assert conn.request(b"delete %d" % job) == b"DELETED"
        ready = readable(flood[:100], 5)
        assert ready and all(closed_by_peer(sock) for sock in ready)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        for sock in flood:
            sock.close()


def test_refused_attempts_whose_clients_hung_up_give_their_back_off_turn_back(node):
    """From one address: three refused tokens (answered), then a hundred refused tokens whose
    clients hang up at once. The right token from that address must then be checked within
    the back-off of the failures, not behind a hundred turns nobody waits for."""
    _process, _client, http = node
    source = "127.0.0.77"
    wrong = b"GET /admin/members HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" \
            b"Authorization: Bearer not-the-token\r\n\r\n"
    for _ in range(3):
        assert status_of(request(http, wrong, source)) == 401
    for _ in range(100):
        with socket.create_connection((HOST, http), source_address=(source, 0)) as sock:
            sock.sendall(wrong)
    time.sleep(1.0)  # the node sees the hang-ups (loopback: at once)
    right = wrong.replace(b"not-the-token", TOKEN.encode())
    began = time.monotonic()
    try:
        answer = request(http, right, source, timeout_s=15)
    except socket.timeout:
        pytest.fail(f"no answer within {time.monotonic() - began:.0f} s")
    assert status_of(answer) == 200, answer[:300]


def test_a_malformed_authorization_header_does_not_put_its_token_in_the_log(node):
    process, _client, http = node
    secret = b"leaked-" + TOKEN.encode()
    answer = request(http, b"GET /status HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: Bearer %s\x01\r\n\r\n" % secret)
    assert status_of(answer) == 400
    assert request(http, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Authorization: Bearer %s\r\n\r\n" % TOKEN.encode())
    log = wait_for("the DEBUG line of the malformed request", lambda: (
        lambda text: text if "Invalid header value" in text else None)(
        process.log_path.read_text(errors="replace")), timeout_s=10)
    assert "leaked-" not in log and TOKEN not in log


class _FakeNode(BaseHTTPRequestHandler):
    """Answers as a node would (CORS, a /status) and records every request's headers."""

    seen: list[dict] = []

    def _answer(self, status: int, body: bytes) -> None:
        self.seen.append({"method": self.command, "path": self.path, **dict(self.headers)})
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self) -> None:  # noqa: N802  (http.server's naming)
        self._answer(204, b"")

    def do_GET(self) -> None:  # noqa: N802
        self._answer(200, json.dumps({"node": "fake", "role": "follower", "term": 1,
                                      "ready": True, "http_peers": []}).encode())

    def log_message(self, *args) -> None:
        pass


def test_the_dashboard_sends_the_token_to_no_node_named_in_its_address(node, browser):
    from selenium.webdriver.common.by import By

    _process, client, http = node
    fake = ThreadingHTTPServer((HOST, 0), _FakeNode)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        with LineClient((HOST, client)) as conn:
            conn.request(b"use on-the-page")
            conn.put(b"shown")
        browser.get(f"http://{HOST}:{http}/?nodes={HOST}:{fake.server_address[1]}")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "token-set").click()
        assert wait_for("the tube on the page, read with the token", lambda: browser.find_elements(
            By.CSS_SELECTOR, '#tubes tr[data-tube="on-the-page"]'), 10.0)
        assert wait_for("the leader on the page", lambda: dashboard.page_text(
            browser, "leader") not in ("", "?", "none"), 10.0)
        time.sleep(3.0)  # three more rounds of the page's polling, with the token
        given = [seen for seen in _FakeNode.seen if "Authorization" in seen]
        assert given == [], f"the fake node was sent the token: {given[:1]}"
    finally:
        fake.shutdown()
        fake.server_close()
