"""Online backup of a running three-node cluster and restore into a new one, as the how-to does it.

Method: one module-scoped source cluster (real ``beanraft serve`` processes with an admin token)
is bulk-loaded through pipelined puts with jobs in every state: ready, delayed (with their
remaining delay), reserved (held by an open connection during the backup), buried (with a new
priority), in a paused tube, and one put with a key. ``beanraft backup`` and ``beanraft restore``
run as real commands in the form docs/how-to/backup-restore.md shows; the restored data
directory is checked job by job, then a new cluster at new addresses is started on it and
checked over the wire. Damaged files are refused and write nothing. A backup taken while a
producer and a worker run holds every job acknowledged before it began and not deleted before
it ended. ``BEANRAFT_BACKUP_JOBS`` sets the number of jobs (default 100,000, the issue's round trip;
about 30 s for the module on a quiet machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time

import pytest

from backup_kit import (BURY_TUBE, HOLD_TUBE, PAUSE_S, PAUSED_TUBE, S, Pipe, cli, cluster_on,
                        load_every_state, restored_layout)
from cluster_harness import HOST, Cluster, LineClient, wait_for

from beanraft.jobs.invariants import problems
from beanraft.jobs.machine import Machine
from beanraft.replication.backup_file import read_backup
from beanraft.replication.snapshot_file import read_snapshot

JOBS = int(os.environ.get("BEANRAFT_BACKUP_JOBS", "100000"))
BURY, HOLD = JOBS // 20, min(200, JOBS // 20)
TOKEN = "backup-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "admin-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory, token_file):
    cluster = Cluster(tmp_path_factory.mktemp("source"),
                      extra_args=("--admin-token-file", str(token_file)))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def loaded(source):
    """The source cluster loaded with JOBS jobs in every state; a put-key job; the holder."""
    leader = source.leader()
    began = time.time()  # the delays run from each put: measured from before the first one
    expected, holder = load_every_state((HOST, leader.ports.client), JOBS, BURY, HOLD)
    pipe = Pipe((HOST, leader.ports.client))
    (reply,) = pipe.run([b"put-key order-42 5 0 60 4\r\nkeyd\r\n"])
    pipe.close()
    keyed = int(reply.split()[1])
    expected[keyed] = {"tube": "default", "pri": 5, "ttr": 60, "delay": 0, "body": b"keyd",
                       "state": "ready"}
    yield expected, keyed, holder, began
    holder.close()


def check_state(machine: Machine, expected: dict, restored: bool, elapsed_s: float) -> None:
    """Every job of ``expected`` is in ``machine`` as it must be (reserved ones held or ready)."""
    assert problems(machine) == [] and set(machine.jobs) == set(expected)
    held = 0
    for job_id, want in expected.items():
        job = machine.jobs[job_id]
        assert (job.tube.name, job.pri, job.ttr_ns, job.body) == (
            want["tube"], want["pri"], want["ttr"] * S, want["body"]), job_id
        state = job.state
        if state == "reserved" and not restored and want["tube"] == HOLD_TUBE:
            held += 1
            continue
        assert state == want["state"], (job_id, state, want)
        if state == "delayed":
            left = job.deadline_ns - machine.now_ns
            assert (want["delay"] - elapsed_s) * S <= left <= want["delay"] * S, job_id
    assert held == (0 if restored else HOLD)
    tube = machine.tubes[PAUSED_TUBE]
    assert (PAUSE_S - elapsed_s) * S <= tube.unpause_at_ns - machine.now_ns <= PAUSE_S * S


def test_backup_from_a_follower_and_restore_into_a_new_cluster_keeps_every_job(
        source, loaded, token_file, tmp_path):
    expected, keyed, _holder, loaded_at = loaded
    leader = source.leader()
    backup = tmp_path / "cluster.backup"
    done = cli("backup", leader.http_address, str(backup), "--admin-token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    said = re.fullmatch(r"backup of (\S+) at index \d+ \(term \d+, (\d+) jobs, \d+ bytes\) "
                        r"written to (\S+)\n", done.stdout)
    assert said and said[3] == str(backup), done.stdout
    assert said[1] != leader.http_address  # the leader named a follower to ask instead
    assert int(said[2]) == len(expected)
    assert sorted(os.listdir(tmp_path)) == ["cluster.backup"]  # no partial file left behind
    _header, body = read_backup(str(backup))
    check_state(Machine.restore(body), expected, restored=False,
                elapsed_s=time.time() - loaded_at + 2)  # + clock drift

    layout = restored_layout()
    members = [f"{HOST}:{ports.raft}" for ports in layout]
    data_root = tmp_path / "new"
    for i in range(3):
        done = cli("restore", str(backup), "-b", str(data_root / f"node{i + 1}"),
                   *[arg for member in members for arg in ("--member", member)])
        assert done.returncode == 0, done.stderr
        assert f"{HOLD} reserved made ready" in done.stdout
    _anchor, state = read_snapshot(str(data_root / "node1" / "raft.snapshot"))
    check_state(Machine.restore(state), expected, restored=True,
                elapsed_s=time.time() - loaded_at + 2)  # + clock drift

    new = cluster_on(tmp_path / "logs", data_root, layout, source.secret)
    try:
        for node in new.nodes:
            node.start()
        new.wait_ready(timeout_s=60)
        check_over_the_wire(new.nodes[1].client_address, expected, keyed)
        assert all(not (data_root / f"node{i}" / "restore.json").exists() for i in (1, 2, 3))
    finally:
        new.stop()


def check_over_the_wire(address, expected: dict, keyed: int) -> None:
    counts = {state: sum(1 for want in expected.values() if want["state"] == state)
              for state in ("ready", "delayed", "buried")}
    with LineClient(address) as client:
        stats = client.yaml(b"stats")
        assert (int(stats["current-jobs-ready"]), int(stats["current-jobs-delayed"]),
                int(stats["current-jobs-buried"]), int(stats["current-jobs-reserved"])) == (
            counts["ready"], counts["delayed"], counts["buried"], 0)
        paused = client.yaml(b"stats-tube " + PAUSED_TUBE.encode())
        assert PAUSE_S - 600 < int(paused["pause-time-left"]) <= PAUSE_S
        for job_id in sorted(expected)[:: max(1, len(expected) // 50)]:
            want, job = expected[job_id], client.yaml(b"stats-job %d" % job_id)
            assert (job["tube"], int(job["pri"]), int(job["ttr"]), job["state"]) == (
                want["tube"], want["pri"], want["ttr"], want["state"]), job_id
            if want["state"] == "delayed":
                assert want["delay"] - 600 < int(job["time-left"]) <= want["delay"]
        # The put key is remembered: a retried put gets the first job, not a second one.
        assert client.request(b"put-key order-42 5 0 60 4\r\nkeyd") == b"INSERTED %d" % keyed
        assert client.put(b"after") > max(expected)  # ids go on from the backup's counter
        assert client.request(b"use " + BURY_TUBE.encode()) == b"USING " + BURY_TUBE.encode()
        assert client.request(b"kick 1") == b"KICKED 1"


@pytest.mark.parametrize("how", ["corrupt", "truncated", "foreign"])
def test_a_corrupt_truncated_or_foreign_file_is_refused_and_nothing_is_written(tmp_path, how):
    from test_backup_units import backup_file, busy_state, damaged

    h, _ids = busy_state()
    good = open(backup_file(tmp_path, h.m.snapshot()), "rb").read()
    bad = tmp_path / f"{how}.backup"
    bad.write_bytes({"corrupt": damaged(good, "body"), "truncated": damaged(good, "truncated"),
                     "foreign": b"\x1f\x8b\x08" + os.urandom(200)}[how])
    done = cli("restore", str(bad), "-b", str(tmp_path / "data"))
    assert done.returncode == 7 and "nothing was written" in done.stderr
    assert {"corrupt": "does not match its checksum", "truncated": "truncated",
            "foreign": "not a BeanRaft backup"}[how] in done.stderr
    assert not (tmp_path / "data").exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


def test_backup_needs_the_admin_token_and_a_refused_one_leaves_no_file(source, tmp_path):
    node = source.nodes[0]
    target = tmp_path / "x.backup"
    env = dict(os.environ, BEANRAFT_ADMIN_TOKEN="wrong")
    done = cli("backup", node.http_address, str(target), "--exact", env=env)
    assert done.returncode == 4 and "missing or wrong admin token" in done.stderr
    env.pop("BEANRAFT_ADMIN_TOKEN")
    done = cli("backup", node.http_address, str(target), "--exact", env=env)
    assert done.returncode == 4 and "401" in done.stderr
    env["BEANRAFT_ADMIN_TOKEN"] = TOKEN  # the CLI's other source of the token
    assert os.listdir(tmp_path) == []
    done = cli("backup", node.http_address, str(target), "--exact", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["from"] == node.http_address


def test_a_backup_taken_under_load_holds_every_job_acknowledged_before_it_began(
        source, token_file, tmp_path):
    node = source.nodes[2]
    stop = threading.Event()
    acked: list[tuple[float, int]] = []  # (when acknowledged, id)
    deleting: dict[int, float] = {}  # id -> when its delete was sent

    def producer():
        with LineClient(source.nodes[0].client_address) as client:
            client.request(b"use live")
            while not stop.is_set() and len(acked) < 50_000:
                job_id = client.put(b"live")
                acked.append((time.monotonic(), job_id))

    def worker():
        with LineClient(source.nodes[1].client_address) as client:
            client.request(b"watch live")
            while not stop.is_set():
                client.send(b"reserve-with-timeout 1\r\n")
                line = client.read_line()
                if line.startswith(b"RESERVED"):
                    job_id = int(line.split()[1])
                    client.read_exactly(int(line.split()[2]) + 2)
                    deleting[job_id] = time.monotonic()
                    assert client.request(b"delete %d" % job_id) == b"DELETED"

    threads = [threading.Thread(target=producer), threading.Thread(target=worker)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        began = time.monotonic()
        done = cli("backup", node.http_address, str(tmp_path / "live.backup"), "--exact",
                   "--admin-token-file", str(token_file))
        ended = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert done.returncode == 0, done.stderr
    _header, body = read_backup(str(tmp_path / "live.backup"))
    machine = Machine.restore(body)
    assert problems(machine) == []
    live = {job_id for job_id, job in machine.jobs.items() if job.tube.name == "live"}
    before = {job_id for at, job_id in acked if at < began}
    must_hold = {job_id for job_id in before if deleting.get(job_id, float("inf")) > ended}
    assert before and must_hold <= live
    assert live <= {job_id for _at, job_id in acked} | set(range(max(live, default=0) + 1))


def test_a_reader_that_hangs_up_ends_its_backup_and_the_next_one_runs(source, loaded, tmp_path):
    node = source.nodes[0]
    before = node_log(source, node).count("abandoned after")
    for hang_up in range(1, 3):
        with socket.socket() as sock:
            # A small window: the node's writes stall at once, so it is writing when we go.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(30)
            sock.connect((HOST, node.ports.http))
            sock.sendall(b"POST /admin/backup HTTP/1.1\r\nHost: node\r\nContent-Length: 0\r\n"
                         b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        assert wait_for("the abandoned backup logged", lambda: node_log(source, node).count(
            "abandoned after") == before + hang_up, timeout_s=60)
    # The node logs an abandoned backup once its child is reaped and its slot free: the next
    # backup is taken at once.
    done = cli("backup", node.http_address, str(tmp_path / "after.backup"), "--exact",
               env=dict(os.environ, BEANRAFT_ADMIN_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr


def node_log(cluster, node) -> str:
    return (cluster.workdir / f"{node.name}.log").read_text()
