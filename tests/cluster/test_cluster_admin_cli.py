"""The admin CLI as an operator meets it: ``beanraft tube``, ``job``, ``buried`` and ``top`` run
the real console script against a real three-node cluster, print text or ``--json``, and turn
beanstalk errors into clear messages and the exit statuses of docs/reference/cli.md; a purge and
moves sent through a follower are replicated to every node.

Method: one cluster for the module (three ``beanraft serve`` processes); each test uses tubes of
its own. Commands run as subprocesses with a clean environment and a bounded timeout; jobs are
set up and checked over raw sockets (``LineClient``) on each node. One test starts the real
beanstalkd 1.12 to show the message for a server without the admin commands.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from cluster_harness import HOST, Cluster, LineClient, beanraft_argv, clean_env, free_ports

RUN_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("admin-cli"), size=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def address(node) -> str:
    host, port = node.client_address
    return f"{host}:{port}"


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(beanraft_argv() + list(args), input=stdin, capture_output=True,
                          timeout=RUN_TIMEOUT_S, env=clean_env())


def run_json(*args: str):
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def bury_all(client: LineClient, tube: str, bodies: list[bytes], pri: int = 7) -> list[int]:
    """Put each body into ``tube`` and bury it; returns the ids."""
    assert client.request(b"use " + tube.encode()) == b"USING " + tube.encode()
    ids = [client.put(body) for body in bodies]
    for job_id in ids:
        client.send(b"reserve-job %d\r\n" % job_id)
        assert client.read_job()[0] == job_id
        assert client.request(b"bury %d %d" % (job_id, pri)) == b"BURIED"
    return ids


def test_job_put_peek_and_delete_print_text_and_json(trio):
    node = address(trio.leader())
    done = run("job", "put", "cli-jobs", "hello", "--pri", "5", "--address", node)
    assert done.returncode == 0 and done.stdout.startswith(b"inserted job "), done
    job_id = int(done.stdout.split()[2])
    peeked = run_json("job", "peek", str(job_id), "--address", node)
    assert (peeked["body"], peeked["stats"]["tube"], peeked["stats"]["pri"]) == ("hello", "cli-jobs", 5)
    stdin_put = run("job", "put", "cli-jobs", "-", "--json", "--address", node, stdin=b"\x00\xff")
    second = json.loads(stdin_put.stdout)["id"]
    assert run_json("job", "peek", str(second), "--address", node)["body_base64"] == "AP8="
    assert run_json("job", "delete", str(job_id), "--address", node) == {"id": job_id,
                                                                         "deleted": True}
    missing = run("job", "peek", str(job_id), "--json", "--address", node)
    assert missing.returncode == 3
    assert json.loads(missing.stdout) == {"error": f"job {job_id}: not found", "status": 3}
    assert b"beanraft: job" in missing.stderr


def test_tube_list_stats_and_pause(trio):
    node = address(trio.leader())
    with LineClient(trio.leader().client_address) as client:
        client.request(b"use cli-tubes")
        client.put(b"a", pri=1)
        assert "cli-tubes" in run_json("tube", "list", "--address", node)
        stats = run_json("tube", "stats", "cli-tubes", "--address", node)
        assert (stats["current-jobs-ready"], stats["current-jobs-urgent"]) == (1, 1)
        assert run_json("tube", "pause", "cli-tubes", "30", "--address", node)["paused_s"] == 30
        assert client.yaml(b"stats-tube cli-tubes")["pause"] == "30"
        text = run("tube", "stats", "cli-tubes", "--address", node)
        assert b"current-jobs-ready: 1\n" in text.stdout
        assert run("tube", "stats", "no-such-tube", "--address", node).returncode == 3


def test_buried_lists_kicks_and_moves_a_tubes_buried_jobs(trio):
    leader = trio.leader()
    node = address(leader)
    with LineClient(leader.client_address) as client:
        ids = bury_all(client, "cli-buried", [b"one", b"three"])
        listed = run_json("buried", "cli-buried", "--address", node)
        assert [(j["id"], j["pri"], j["size"]) for j in listed] == [(ids[0], 7, 3), (ids[1], 7, 5)]
        assert run_json("buried", "cli-buried", "--offset", "1", "--limit", "1",
                        "--address", node)[0]["id"] == ids[1]
        assert run_json("job", "kick", str(ids[0]), "--address", node)["kicked"] is True
        assert client.yaml(b"stats-job %d" % ids[0])["state"] == "ready"
        moved = run_json("buried", "cli-buried", "--move-to", "cli-graveyard", "--address", node)
        assert moved["moved"] == 1
        assert client.yaml(b"stats-job %d" % ids[1])["tube"] == "cli-graveyard"
        assert run("buried", "cli-buried", "--address", node).stdout.startswith(b"no buried jobs")


def test_a_purge_and_moves_through_a_follower_reach_every_node(trio):
    leader, follower = trio.leader(), trio.followers()[0]
    with LineClient(leader.client_address) as client:
        buried = bury_all(client, "cli-purge", [b"b1", b"b2"])
        ready = [client.put(b"r%d" % i) for i in range(3)]
        client.send(b"reserve-job %d\r\n" % ready[0])
        assert client.read_job()[0] == ready[0]  # held: a purge must leave it
        via = address(follower)
        assert run_json("tube", "purge", "cli-purge", "--state", "ready", "--address", via) == {
            "tube": "cli-purge", "state": "ready", "purged": 2}
        assert run_json("job", "move", str(buried[0]), "cli-moved", "--address", via)["moved"] == 1
        assert run("job", "move", str(ready[0]), "cli-moved", "--address", via).returncode == 3
        trio.converged()
        for node in trio.nodes:
            with LineClient(node.client_address) as reader:
                stats = reader.yaml(b"stats-tube cli-purge")
                assert (stats["current-jobs-ready"], stats["current-jobs-reserved"],
                        stats["current-jobs-buried"]) == ("0", "1", "1"), node
                assert reader.yaml(b"stats-job %d" % buried[0])["tube"] == "cli-moved", node
                assert reader.request(b"peek %d" % ready[1]) == b"NOT_FOUND", node


def test_errors_have_their_own_messages_and_exit_statuses(trio):
    node = address(trio.leader())
    unused = free_ports(1)[0]
    unreachable = run("tube", "list", "--address", f"{HOST}:{unused}")
    assert unreachable.returncode == 8 and b"cannot connect" in unreachable.stderr
    assert run("tube", "purge", "no-such-tube", "--state", "all", "--address", node).returncode == 3
    too_big = run("job", "put", "cli-errors", "-", "--address", node, stdin=b"x" * 70000)
    assert too_big.returncode == 5 and b"maximum job size" in too_big.stderr
    usage = run("tube", "purge", "cli-errors", "--state", "reserved", "--address", node)
    assert usage.returncode == 2
    top = run("top", "--once", "--interval", "0.2", "--address", f"{HOST}:{unused}",
              "--http", f"{HOST}:{unused}")
    assert top.returncode == 8 and b"cannot connect" in top.stderr, top.stderr


def test_a_plain_beanstalkd_is_named_as_lacking_the_admin_commands(tmp_path):
    port = free_ports(1)[0]
    server = subprocess.Popen(["/usr/bin/beanstalkd", "-l", HOST, "-p", str(port)])
    try:
        for _attempt in range(50):
            if run("tube", "list", "--address", f"{HOST}:{port}").returncode == 0:
                break
        done = run("tube", "purge", "default", "--state", "all", "--address", f"{HOST}:{port}")
        assert done.returncode == 4
        assert b"not BeanRaft" in done.stderr
    finally:
        server.kill()
        server.wait()


def test_top_once_prints_the_nodes_and_the_tubes_with_rates(trio):
    leader = trio.leader()
    with LineClient(leader.client_address) as client:
        client.request(b"use cli-top")
        client.put(b"x", pri=3)
    http = [arg for node in trio.nodes for arg in ("--http", node.http_address)]
    done = run("top", "--once", "--interval", "0.3", "--address", address(leader), *http)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    for node in trio.nodes:
        assert node.raft_address in text
    assert "leader" in text and text.count("follower") == 2
    row = next(line for line in text.splitlines() if "cli-top" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:7] == ["cli-top", "1", "0", "0", "0", "1", "0.0"]


def test_top_once_finds_the_other_nodes_from_one_nodes_peer_http(trio, tmp_path):
    # The harness gives every node --peer-http: one node's HTTP address is enough. The frame is
    # also saved as SVG, as docs/tutorial/top.md makes its screenshot.
    follower = trio.followers()[0]
    svg = tmp_path / "top.svg"
    done = run("top", "--once", "--interval", "0.2", "--address", address(follower),
               "--http", follower.http_address, "--svg", str(svg))
    text = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    for node in trio.nodes:
        assert node.raft_address in text
    assert "leader" in text and text.count("follower") == 2 and "unreachable" not in text
    picture = svg.read_text()
    assert picture.startswith("<svg") and picture.count("follower") == 2
    assert all(node.raft_address in picture for node in trio.nodes)
    refused = run("top", "--svg", str(svg), "--address", address(follower))
    assert refused.returncode == 2 and b"--svg needs --once" in refused.stderr


def test_top_shows_raft_peers_without_an_http_address_from_what_the_leader_knows():
    from beanraft.node.top import node_rows

    leader = {"node": "r1", "role": "leader", "term": 3, "commit_index": 50, "applied_index": 50,
              "ready": True, "peers": [
                  {"address": "r2", "connected": True, "match_index": 48, "silent_s": 0.1},
                  {"address": "r3", "connected": False, "match_index": None, "silent_s": 9.0}]}
    rows = node_rows({"h1": leader, "h4": None})
    assert [(r["node"], r["role"], r.get("lag"), r["health"]) for r in rows] == [
        ("r1", "leader", 0, "ready"), ("h4", "down", None, "unreachable"),
        ("r2", "peer", 2, "connected"), ("r3", "peer", None, "disconnected")]


def test_top_names_a_node_whose_journal_failed():
    from beanraft.node.top import node_rows

    failed = {"node": "r2", "role": "follower", "term": 3, "commit_index": 40,
              "applied_index": 40, "ready": False, "journal_failed": True, "peers": []}
    healthy = {"node": "r1", "role": "leader", "term": 3, "commit_index": 50,
               "applied_index": 50, "ready": True, "journal_failed": False, "peers": []}
    rows = node_rows({"h1": healthy, "h2": failed})
    assert [(r["node"], r["health"]) for r in rows] == [("r1", "ready"), ("r2", "journal failed")]


def test_status_names_a_node_whose_journal_failed_and_one_that_drains(capsys):
    from beanraft.node.ops import _print_table

    def doc(node, **more):
        return {"node": node, "role": "follower", "term": 3, "commit_index": 50,
                "applied_index": 50, "ready": True, **more}

    _print_table({"h1": doc("r1", role="leader"), "h2": doc("r2", ready=False, journal_failed=True),
                  "h3": doc("r3", draining=True), "h4": None})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["ready", "failed", "draining", "unreachable"]
    assert lines[2].endswith("  journal failed")


def test_top_rates_are_the_counter_deltas_over_the_time_between_samples():
    from beanraft.node.top import Sample, _rate

    stats = {"total-jobs": 10, "cmd-delete": 4}
    before = Sample(at=100.0, tubes={"t": stats})
    now = Sample(at=102.0, tubes={"t": {"total-jobs": 30, "cmd-delete": 5}, "new": stats})
    assert (_rate(now, before, "t", "total-jobs"), _rate(now, before, "t", "cmd-delete")) == (
        "10.0", "0.5")
    assert _rate(now, before, "new", "total-jobs") == "-"  # no earlier sample of it
    assert _rate(now, None, "t", "total-jobs") == "-"

