"""The admin surface's guard on a real node: every mutating and /admin/ endpoint needs the bearer
token; reads are open by default and closed by --http-read-token-required, except the dashboard's
static files, and the dashboard in headless chromium reads such a node once the token is entered;
the CLI finds the token in a file or in $BEANRAFT_ADMIN_TOKEN. A single node's backup restores
into a single node.

Method: real ``beanraft serve`` processes with an HTTP port, asked with urllib; the CLI runs as
a real command; the page is driven by selenium (skipped without /usr/bin/chromedriver).
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backup_kit import cli
from cluster_harness import HOST, LineClient, wait_for
from test_cluster_dashboard import browser, page_text  # noqa: F401  (the headless chromium)

from beanraft.node import launcher

TOKEN = "guard-token-1234"
OPEN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


_SOURCES = itertools.count(2)


def call(port: int, method: str, path: str, token: str | None = None) -> int:
    """The status of one request, sent from a loopback address of its own (127.0.0.2 on), so
    that the node's back-off after failed authentications from one address does not slow the
    test down."""
    source = f"127.0.0.{2 + next(_SOURCES) % 250}"
    conn = http.client.HTTPConnection(HOST, port, timeout=10, source_address=(source, 0))
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, body=b"" if method in ("POST", "DELETE") else None,
                     headers=headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def start(workdir: Path, name: str, *flags: str) -> tuple[launcher.ServeProcess, int, int]:
    client, http = launcher.free_ports(2)
    spec = launcher.NodeSpec(name, HOST, client, None, http, workdir / name)
    node = launcher.ServeProcess(spec, [], extra_args=flags, log_path=workdir / f"{name}.log")
    node.start()
    wait_for(f"{name} serves", lambda: _serves(client), timeout_s=30)
    return node, client, http


def _serves(port: int) -> bool:
    try:
        with LineClient((HOST, port), timeout_s=2) as conn:
            return conn.request(b"list-tube-used") == b"USING default"
    except OSError:
        return False


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("guard")
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    node, client, http = start(workdir, "closed", "--admin-token-file", str(token_file),
                               "--http-read-token-required")
    yield workdir, client, http, token_file
    node.terminate()


@pytest.mark.parametrize("path", ["/status", "/healthz", "/readyz", "/metrics", "/api/tubes"])
def test_closed_reads_need_the_token_and_answer_with_it(closed, path):
    _workdir, _client, http, _token_file = closed
    assert call(http, "GET", path) == 401
    assert call(http, "GET", path, "not-" + TOKEN) == 401
    assert call(http, "GET", path, TOKEN) in (200, 503)  # /readyz: 503 until ready


def test_the_dashboard_page_still_loads_and_mutations_and_admin_paths_need_the_token(closed):
    _workdir, _client, http, _token_file = closed
    for path in ("/", "/dashboard/app.js", "/dashboard/app.css"):
        assert call(http, "GET", path) == 200
    assert call(http, "OPTIONS", "/status") == 204  # the page's CORS preflight
    assert call(http, "POST", "/api/jobs/1/kick") == 401
    assert call(http, "DELETE", "/api/jobs/1") == 401
    assert call(http, "POST", "/admin/backup") == 401
    assert call(http, "GET", "/admin/backup") == 401
    assert call(http, "POST", "/admin/leader/transfer") == 401
    assert call(http, "GET", "/admin/backup", TOKEN) == 405


def test_the_cli_reads_the_token_from_a_file_or_the_environment_and_restores_a_single_node(
        closed, tmp_path):
    workdir, client, http, token_file = closed
    with LineClient((HOST, client)) as conn:
        ids = [conn.put(b"single %d" % i, pri=i, delay=900 if i == 2 else 0) for i in range(4)]
    address = f"{HOST}:{http}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEANRAFT_")}
    assert cli("status", address, "--timeout", "10", env=env).returncode == 1  # reads closed
    assert cli("status", address, "--timeout", "10", "--admin-token-file", str(token_file),
               env=env).returncode == 0
    done = cli("backup", address, str(tmp_path / "one.backup"), "--json",
               env=dict(env, BEANRAFT_ADMIN_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jobs"] == 4
    assert cli("restore", str(tmp_path / "one.backup"), "-b", str(tmp_path / "copy" / "one"),
               env=env).returncode == 0
    copy, copy_client, _http = start(tmp_path / "copy", "one")
    try:
        with LineClient((HOST, copy_client)) as conn:
            assert conn.yaml(b"stats-job %d" % ids[3])["pri"] == "3"
            job = conn.yaml(b"stats-job %d" % ids[2])
            assert job["state"] == "delayed" and 800 < int(job["time-left"]) <= 900
            assert conn.put(b"next") == ids[-1] + 1
    finally:
        copy.terminate()


def test_without_a_token_file_the_admin_endpoints_are_closed_and_reads_cannot_be(tmp_path):
    node, _client, http = start(tmp_path, "open")
    try:
        assert call(http, "GET", "/status") == 200
        request = urllib.request.Request(f"http://{HOST}:{http}/admin/backup", data=b"",
                                         method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            OPEN.open(request, timeout=10)
        assert refused.value.code == 403
        assert "--admin-token-file" in json.loads(refused.value.read())["error"]
    finally:
        node.terminate()
    done = cli("serve", "-l", HOST, "-p", "0", "--http", f"{HOST}:{http}",
               "--http-read-token-required", timeout_s=60)
    assert done.returncode == 2
    assert "--http-read-token-required needs --admin-token-file" in done.stderr


def test_the_dashboard_reads_a_closed_node_once_the_token_is_entered(closed, browser):
    from selenium.webdriver.common.by import By

    _workdir, client, http, _token_file = closed
    with LineClient((HOST, client)) as conn:
        conn.request(b"use shown")
        conn.put(b"on the page")
    browser.get(f"http://{HOST}:{http}/")
    assert wait_for("the page asks for the token", lambda: "needs the admin token to be read"
                    in page_text(browser, "message"), 10.0)
    assert not browser.find_elements(By.CSS_SELECTOR, '#tubes tr[data-tube="shown"]')
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "token-set").click()
    assert wait_for("the tube on the page", lambda: browser.find_elements(
        By.CSS_SELECTOR, '#tubes tr[data-tube="shown"]'), 10.0)
    assert wait_for("the leader on the page", lambda: page_text(browser, "leader") != "", 10.0)
