"""The web dashboard and its /api endpoints, on a real three-node cluster in a real browser.

Method: one cluster for the module, started with an admin token file. The /api endpoints are
driven with urllib (the token's 401/403 rules, bounds, mutations through Raft); then Debian's
headless chromium, through selenium and /usr/bin/chromedriver, loads the page from the leader,
and the test compares what the page shows with /status and stats-tube, kicks a buried job with
the page's button, kills the leader with SIGKILL and waits for the page to name the new one.
BEANRAFT_DOCS_SCREENSHOT=1 makes it refresh docs/tutorial/dashboard.png on the way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cluster_harness import HOST, Cluster, LineClient, wait_for

TOKEN = "dashboard-test-token-0123456789"
TUBE = "dash"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The tutorial's picture is refreshed only on request, so a test run leaves the tree clean.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "tutorial" / "dashboard.png"


def call(node, method: str, path: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{node.http_address}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"text": body.decode()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dashboard")
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cluster = Cluster(workdir, extra_args=("--admin-token-file", str(token_file)))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def buried_jobs(cluster) -> list[int]:
    """Five jobs in tube ``dash``: three buried, two ready."""
    with LineClient(cluster.nodes[0].client_address) as client:
        assert client.request(b"use " + TUBE.encode()) == b"USING " + TUBE.encode()
        assert client.request(b"watch " + TUBE.encode()).startswith(b"WATCHING")
        ids = [client.put(b"job %d" % i, pri=i) for i in range(5)]
        for _ in range(3):
            client.send(b"reserve-with-timeout 5\r\n")
            job_id, _body = client.read_job()
            assert client.request(b"bury %d 7" % job_id) == b"BURIED"
    return ids[:3]


def stats_tube(node) -> dict[str, str]:
    with LineClient(node.client_address) as client:
        return client.yaml(b"stats-tube " + TUBE.encode())


def test_mutations_need_the_admin_token_and_reads_do_not(cluster, buried_jobs):
    node = cluster.nodes[1]
    assert call(node, "POST", f"/api/jobs/{buried_jobs[0]}/kick")[0] == 401
    assert call(node, "POST", f"/api/jobs/{buried_jobs[0]}/kick", TOKEN + "x")[0] == 401
    assert call(node, "DELETE", f"/api/jobs/{buried_jobs[0]}", "")[0] == 401
    assert call(node, "GET", f"/api/jobs/{buried_jobs[0]}")[0] == 200
    assert stats_tube(node)["current-jobs-buried"] == "3"  # nothing was kicked


@pytest.mark.parametrize("job_id", ["%C2%B2", "1" * 5000, "0", "18446744073709551616", "-1"],
                         ids=["superscript-two", "5000-digits", "zero", "2**64", "negative"])
def test_a_job_id_that_is_not_one_is_a_bad_request_not_a_server_error(cluster, job_id):
    node = cluster.nodes[0]
    for method, path in (("GET", f"/api/jobs/{job_id}"), ("DELETE", f"/api/jobs/{job_id}"),
                         ("POST", f"/api/jobs/{job_id}/kick")):
        assert call(node, method, path, TOKEN) == (400, {"text": "a job id is a positive integer"})


def test_the_buried_list_is_bounded_by_its_limit(cluster, buried_jobs):
    code, doc = call(cluster.nodes[2], "GET", f"/api/tubes/{TUBE}/buried?limit=2")
    assert code == 200 and doc["count"] == 3
    assert [job["id"] for job in doc["jobs"]] == buried_jobs[:2]
    code, doc = call(cluster.nodes[2], "GET", f"/api/tubes/{TUBE}/buried?limit=100000")
    assert code == 200 and len(doc["jobs"]) == 3
    assert call(cluster.nodes[2], "GET", "/api/tubes/no-such-tube/buried")[0] == 404


def test_the_tube_list_and_the_buried_list_stop_at_their_bounds(cluster):
    from beanraft.node import api

    with LineClient(cluster.nodes[0].client_address) as client:
        # One connection watching MAX_TUBES + 1 tubes keeps them all alive; pipelined.
        client.send(b"".join(b"watch bound%d\r\n" % i for i in range(api.MAX_TUBES + 1)))
        for _ in range(api.MAX_TUBES + 1):
            assert client.read_line().startswith(b"WATCHING")
        client.request(b"use many")
        count = api.MAX_BURIED + 1
        client.send(b"".join(b"put 0 0 60 1\r\nx\r\n" for _ in range(count)))
        assert all(client.read_line().startswith(b"INSERTED ") for _ in range(count))
        client.send(b"watch many\r\n" + b"reserve-with-timeout 0\r\n" * count)
        client.read_line()
        reserved = [client.read_job()[0] for _ in range(count)]
        client.send(b"".join(b"bury %d 0\r\n" % i for i in reserved))
        assert {client.read_line() for _ in reserved} == {b"BURIED"}
        code, doc = call(cluster.nodes[1], "GET", "/api/tubes")
        assert code == 200 and len(doc["tubes"]) == api.MAX_TUBES and doc["truncated"] is True
        code, doc = call(cluster.nodes[1], "GET", f"/api/tubes/many/buried?limit={count + 100}")
        assert code == 200 and doc["count"] == count and len(doc["jobs"]) == api.MAX_BURIED
        client.send(b"".join(b"delete %d\r\n" % i for i in reserved))  # leave the cluster as it was
        assert {client.read_line() for _ in reserved} == {b"DELETED"}


def test_a_delete_on_a_follower_that_has_not_applied_the_put_yet_finds_the_job(cluster):
    """The right to delete is read from the job's tube after the read barrier, not from the
    follower's state as it stands: a frozen follower misses the put, gets the DELETE while it
    is frozen, and must answer it only once it has caught up."""
    leader = cluster.leader()
    follower = next(node for node in cluster.nodes if node is not leader)
    follower.signal(signal.SIGSTOP)
    try:
        with LineClient(leader.client_address) as client:
            job_id = client.put(b"put while the follower sleeps")
        answer: list = []
        request = threading.Thread(target=lambda: answer.append(
            call(follower, "DELETE", f"/api/jobs/{job_id}", TOKEN)))
        request.start()
        time.sleep(0.5)  # the request waits in the frozen node's accept queue
    finally:
        follower.signal(signal.SIGCONT)
    request.join(20)
    assert answer and (answer[0][0], answer[0][1].get("reply")) == (200, "DELETED"), answer


def test_a_delete_with_the_token_is_committed_on_every_node(cluster):
    with LineClient(cluster.nodes[0].client_address) as client:
        job_id = client.put(b"to delete")
    code, doc = call(cluster.nodes[2], "DELETE", f"/api/jobs/{job_id}", TOKEN)
    assert (code, doc["reply"]) == (200, "DELETED")
    assert call(cluster.nodes[2], "DELETE", f"/api/jobs/{job_id}", TOKEN) == (404, {"reply": "NOT_FOUND"})
    for node in cluster.nodes:
        with LineClient(node.client_address) as client:
            assert wait_for("the delete everywhere", lambda: client.request(b"peek %d" % job_id)
                            == b"NOT_FOUND", 5.0)


def test_without_a_token_file_mutations_are_disabled(start_cluster):
    node = start_cluster(size=1).nodes[0]
    code, doc = call(node, "POST", "/api/jobs/1/kick", "anything")
    assert code == 403 and "--admin-token-file" in doc["error"]


# ----------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMEDRIVER):
        pytest.skip(f"{CHROMEDRIVER} is missing (Debian packages chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def page_text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def tube_row(driver) -> dict[str, str]:
    return driver.execute_script("""
        const row = document.querySelector('#tubes tr[data-tube="%s"]');
        if (!row) return {};
        const out = {};
        for (const td of row.cells) if (td.className) out[td.className] = td.textContent;
        return out;""" % TUBE)


def severe_logs(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_shows_the_leader_and_the_tube_counts(cluster, buried_jobs, browser):
    leader = cluster.leader()
    browser.get(f"http://{leader.http_address}/")  # killed later: the page must move elsewhere
    follower = cluster.followers()[0]
    assert wait_for("the leader on the page", lambda: page_text(browser, "leader") == leader.raft_address, 5.0)
    stats = stats_tube(follower)
    assert wait_for("the tube's counts", lambda: tube_row(browser).get("buried") == stats["current-jobs-buried"], 5.0)
    row = tube_row(browser)
    assert (row["ready"], row["buried"], row["delayed"], row["reserved"], row["urgent"]) == (
        stats["current-jobs-ready"], stats["current-jobs-buried"], stats["current-jobs-delayed"],
        stats["current-jobs-reserved"], stats["current-jobs-urgent"])
    expected = sorted(node.raft_address for node in cluster.nodes)
    assert wait_for("every node in the table (learnt from /status)", lambda: sorted(browser.execute_script(
        "return [...document.querySelectorAll('#nodes tr[data-node]')].map(r => r.dataset.node)")) == expected, 5.0)
    assert page_text(browser, "source") == f"http://{leader.http_address}"
    with LineClient(follower.client_address) as client:
        client.request(b"use paused")
        client.put(b"held")
        assert client.request(b"pause-tube paused 600") == b"PAUSED"
    assert wait_for("the pause left on the page", lambda: re.fullmatch(
        r"(59\d|600) s of 600 s", browser.execute_script(
            "const r = document.querySelector('#tubes tr[data-tube=\"paused\"] td.paused');"
            "return r ? r.textContent : ''")), 5.0)
    assert severe_logs(browser) == []


def test_a_kick_from_the_page_makes_the_buried_job_ready(cluster, buried_jobs, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'#tubes tr[data-tube="{TUBE}"] button.show').click()
    job_id = buried_jobs[1]
    kick = f'#buried tr[data-job="{job_id}"] button.kick'
    assert wait_for("the buried job's row", lambda: browser.find_elements(By.CSS_SELECTOR, kick), 5.0)
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "token-set").click()
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""  # never shown back
    assert TOKEN not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, kick).click()
    assert wait_for("the kick's reply", lambda: page_text(browser, "message") == f"kick {job_id}: KICKED", 10.0)
    with LineClient(cluster.nodes[0].client_address) as client:
        assert client.yaml(b"stats-job %d" % job_id)["state"] == "ready"
    assert wait_for("the job gone from the buried list",
                    lambda: not browser.find_elements(By.CSS_SELECTOR, kick), 5.0)
    browser.find_element(By.CSS_SELECTOR, f'#buried tr[data-job="{buried_jobs[0]}"] button.peek').click()
    assert wait_for("the peeked body", lambda: "job 0" in page_text(browser, "peek"), 5.0)
    time.sleep(2.5)  # a few rounds for the chart and the rates, then the documentation's picture
    screenshot = DOCS_SCREENSHOT if os.environ.get("BEANRAFT_DOCS_SCREENSHOT") else tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(screenshot))
    assert severe_logs(browser) == []


def test_after_the_leader_is_killed_the_page_names_the_new_one(cluster, browser):
    old = cluster.leader()
    cluster.kill(old)
    killed_at = time.monotonic()
    survivors = [node for node in cluster.nodes if node is not old]
    new = wait_for("a new leader", lambda: next((n for n in survivors if (n.status() or {}).get("role")
                                                 == "leader"), None), 15.0)
    elected_at = time.monotonic()
    assert wait_for("the new leader on the page",
                    lambda: page_text(browser, "leader") == new.raft_address, 2.0 + 1.0)
    shown_at = time.monotonic()
    print(f"leader killed -> elected {elected_at - killed_at:.2f} s -> on the page "
          f"{shown_at - elected_at:.2f} s later")
    assert wait_for("another node read", lambda: page_text(browser, "source")
                    in [f"http://{n.http_address}" for n in survivors], 3.0)
    # A survivor slow to answer (0.8 s) shows as unreachable for a round: wait for a clean one.
    assert wait_for("only the killed node unreachable", lambda: browser.execute_script(
        "return [...document.querySelectorAll('#nodes tr.down')].map(r => r.dataset.url)")
        == [f"http://{old.http_address}"], 3.0)
    assert severe_logs(browser) == [] or all("Failed to fetch" in e["message"] or "ERR_CONNECTION_REFUSED"
                                            in e["message"] for e in severe_logs(browser))


def test_an_admin_token_file_that_others_may_read_is_refused(tmp_path):
    from cluster_harness import beanraft_argv, clean_env

    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o640)
    done = subprocess.run([*beanraft_argv(), "serve", "-l", HOST, "-p", "0", "--admin-token-file",
                           str(token_file)], env=clean_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--admin-token-file" in done.stderr and "accessible by group or others" in done.stderr
