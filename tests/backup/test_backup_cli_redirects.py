"""No request that carries the admin token follows a redirect: ``beanraft backup``, ``leader
transfer``, ``member list`` and ``member add`` fail with exit status 7 and say why, ``status``
shows the address down, and the node's own reads (``serve --join``'s member list, the launcher's
/status) fail; the address the redirect names never receives a request, so never the token.

Method: two real HTTP servers on loopback sockets of this test: one answers every request with a
redirect (302, which urllib follows for a POST too, as a GET; 307, which it follows for a GET) to
the other, which records every request it receives. The commands run as real subprocesses.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backup_kit import HOST, cli, clean_env

from beanraft.node import launcher
from beanraft.node.membership_api import read_members
from beanraft.replication.membership import MembershipError

TOKEN = "redirect-token-5678"


class Server:
    """A ThreadingHTTPServer on a free loopback port, answering every method with ``answer``."""

    def __init__(self, answer):
        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                answer(self)

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *args):  # the test's output is not the place
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.address = f"{HOST}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture(params=[302, 307])
def redirect(request):
    """(the redirecting address, the list of (method, path, Authorization) the target got)."""
    received: list[tuple[str, str, str | None]] = []

    def record(handler) -> None:
        received.append((handler.command, handler.path, handler.headers.get("Authorization")))
        body = b'{"role": "follower", "members": ["127.0.0.1:1"], "leader": "127.0.0.1:1"}'
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    target = Server(record)

    def send_away(handler) -> None:
        handler.send_response(request.param)
        handler.send_header("Location", f"http://{target.address}{handler.path}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    redirector = Server(send_away)
    yield redirector.address, received
    redirector.close()
    target.close()


@pytest.mark.parametrize("command", [
    ["backup", "{node}", "{file}"],
    ["backup", "{node}", "{file}", "--exact"],
    ["leader", "transfer", "--http", "{node}"],
    ["member", "list", "--http", "{node}"],
    ["member", "add", "127.0.0.1:9", "--http", "{node}", "--force"],
])
def test_an_admin_command_answered_by_a_redirect_fails_and_sends_the_token_nowhere_else(
        redirect, command, tmp_path):
    address, received = redirect
    argv = [arg.format(node=address, file=tmp_path / "b.backup") for arg in command]
    done = cli(*argv, env=clean_env(BEANRAFT_ADMIN_TOKEN=TOKEN), timeout_s=60)
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert "a redirect to http://" in done.stderr and "not followed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert received == []
    assert list(tmp_path.iterdir()) == []


def test_status_shows_a_redirecting_address_down_and_sends_the_token_nowhere_else(
        redirect, tmp_path):
    address, received = redirect
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    done = cli("status", address, "--admin-token-file", str(token_file), "--json",
               env=clean_env(), timeout_s=60)
    assert done.returncode == 1 and '"' + address + '": null' in done.stdout
    assert received == []


def test_the_nodes_own_token_requests_refuse_a_redirect(redirect):
    address, received = redirect
    host, _, port = address.rpartition(":")
    assert launcher.fetch_status(host, int(port), 10.0, token=TOKEN) is None
    with pytest.raises(MembershipError, match="a redirect to http://.*not followed"):
        read_members(address, TOKEN)
    assert received == []
