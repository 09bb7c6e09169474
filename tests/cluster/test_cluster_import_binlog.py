"""Migration from beanstalkd: ``beanraft import-binlog`` loads what the real beanstalkd 1.12 wrote
with ``-b DIR`` into a running BeanRaft node, every job as beanstalkd itself restores it (tube,
state, priority, TTR, remaining delay, body, the order of the buried), re-running it creates no
duplicate, and a binlog it cannot read whole (truncated, another version, garbage, a beanstalkd
still running on it) or a target that is not BeanRaft imports nothing, and an import cut
part-way reports exactly what it imported.

Method: one real beanstalkd 1.12 per module writes a binlog through puts, reserves, buries,
releases with a delay, kicks and deletes in three tubes; it is then stopped, and a second
beanstalkd started on a copy of the directory says, by stats-job and peek, what beanstalkd
restores from it: that is the expected state. The commands of docs/how-to/migrate-from-beanstalkd.md
run as subprocesses against one ``beanraft serve`` node (a one-node cluster); damaged copies of
the binlog are made by truncating and overwriting bytes of real files; a small TCP proxy cuts
an import's connection part-way, and a fresh node then holds exactly what the report says.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cluster_harness import HOST, Cluster, LineClient, beanraft_argv, clean_env, free_ports

BEANSTALKD = "/usr/bin/beanstalkd"
RUN_TIMEOUT_S = 60
STATS = ("tube", "state", "pri", "ttr")


def how_to_output() -> dict[str, str]:
    """The output the how-to shows for its dry run and its import, keyed by the dry run's flag."""
    page = (Path(__file__).parents[2] / "docs/how-to/migrate-from-beanstalkd.md").read_text()
    blocks = [block.split("```", 1)[0] for block in page.split("```console\n")[1:]]
    found = {}
    for block in blocks:
        command, _, output = block.partition("\n")
        if command.startswith("$ beanraft import-binlog") and output:
            found["--dry-run" if "--dry-run" in command else "import"] = output
    return found


HOW_TO_OUTPUT = how_to_output()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(beanraft_argv() + list(args), capture_output=True,
                          timeout=RUN_TIMEOUT_S, env=clean_env())


class Beanstalkd:
    """The real beanstalkd 1.12 on a free loopback port, with ``-b directory``."""

    def __init__(self, directory: Path, *args: str):
        self.port = free_ports(1)[0]
        self.process = subprocess.Popen([BEANSTALKD, "-l", HOST, "-p", str(self.port),
                                         "-b", str(directory), *args])
        for _attempt in range(200):
            try:
                LineClient((HOST, self.port), timeout_s=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("beanstalkd did not start")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self) -> LineClient:
        return LineClient((HOST, self.port))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def reserve_job(client: LineClient, job_id: int) -> None:
    client.send(b"reserve-job %d\r\n" % job_id)
    assert client.read_job()[0] == job_id


def write_history(client: LineClient) -> dict[str, list[int]]:
    """Puts, reserves, buries, delays, kicks and deletes jobs in three tubes; returns the ids
    of the jobs by what happened to them."""
    ids: dict[str, list[int]] = {}
    client.request(b"use default")
    ids["ready"] = [client.put(b"plain", pri=10, ttr=5), client.put(b"urgent", pri=0, ttr=1)]
    assert client.request(b"use emails") == b"USING emails"
    ids["ready"].append(client.put(b"line one\r\nline two\x00\xff", pri=2**32 - 1, ttr=300))
    ids["delayed"] = [client.put(b"later", pri=5, delay=3600, ttr=20)]
    deleted = client.put(b"gone")
    assert client.request(b"delete %d" % deleted) == b"DELETED"
    ids["buried"] = [client.put(b"bad %d" % n, pri=100 + n) for n in range(3)]
    for job_id in reversed(ids["buried"]):  # buried in reverse: kick order differs from id order
        reserve_job(client, job_id)
        assert client.request(b"bury %d 77" % job_id) == b"BURIED"
    released = client.put(b"retry", pri=9)
    reserve_job(client, released)
    assert client.request(b"release %d 8 1200" % released) == b"RELEASED"
    ids["delayed"].append(released)
    kicked = client.put(b"kicked", pri=4)
    reserve_job(client, kicked)
    assert client.request(b"bury %d 4" % kicked) == b"BURIED"
    assert client.request(b"kick-job %d" % kicked) == b"KICKED"
    ids["ready"].append(kicked)
    assert client.request(b"use big-jobs") == b"USING big-jobs"
    ids["ready"].append(client.put(bytes(range(256)) * 200, ttr=60))
    ids["reserved"] = [client.put(b"held", pri=3, ttr=120)]
    reserve_job(client, ids["reserved"][0])  # still reserved when beanstalkd stops
    ids["deleted"] = [deleted]
    return ids


def restored_view(server: Beanstalkd, job_ids: list[int]) -> dict[int, dict]:
    """What beanstalkd restored: per job, its stats-job fields and body."""
    view: dict = {"taken_at": time.monotonic()}
    with server.client() as client:
        for job_id in job_ids:
            stats = client.yaml(b"stats-job %d" % job_id)
            line = client.request(b"peek %d" % job_id)
            size = int(line.split()[2])
            body = client.read_exactly(size + 2)[:-2]
            view[job_id] = {**{k: stats[k] for k in STATS}, "time-left": int(stats["time-left"]),
                            "body": body}
        buried_first = client.request(b"use emails") and client.request(b"peek-buried")
    view["emails-buried-first"] = int(buried_first.split()[1])
    return view


@pytest.fixture(scope="module")
def migration(tmp_path_factory):
    """(binlog directory of a stopped beanstalkd, the ids by fate, what beanstalkd restores)."""
    root = tmp_path_factory.mktemp("binlog")
    directory = root / "beanstalkd"
    directory.mkdir()
    server = Beanstalkd(directory)
    try:
        with server.client() as client:
            ids = write_history(client)
            server.stop()  # while the reserved job is still held, as a crash would leave it
    finally:
        server.stop()
    copy = root / "restored"
    shutil.copytree(directory, copy)
    check = Beanstalkd(copy)
    try:
        live = [job_id for fate, group in ids.items() if fate != "deleted" for job_id in group]
        expected = restored_view(check, sorted(live))
        with check.client() as client:
            assert client.request(b"peek %d" % ids["deleted"][0]) == b"NOT_FOUND"
    finally:
        check.stop()
    return directory, ids, expected


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("import-node"), size=1)
    try:
        yield cluster.start().nodes[0]
    finally:
        cluster.stop()


def address(node) -> str:
    host, port = node.client_address
    return f"{host}:{port}"


def current_jobs(node) -> int:
    with LineClient(node.client_address) as client:
        stats = client.yaml(b"stats")
    return sum(int(stats[f"current-jobs-{s}"]) for s in ("ready", "reserved", "delayed", "buried"))


def test_the_how_to_imports_every_job_as_beanstalkd_restores_it_and_a_rerun_adds_nothing(
        migration, node):
    directory, ids, expected = migration
    target = address(node)
    dry = run("import-binlog", str(directory), "--to", target, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.decode() == HOW_TO_OUTPUT["--dry-run"]
    assert current_jobs(node) == 0

    done = run("import-binlog", str(directory), "--to", target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == HOW_TO_OUTPUT["import"]
    again = run("import-binlog", str(directory), "--to", target, "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["imported"], report["already_imported"], report["error"]) == (0, 11, None)
    assert current_jobs(node) == 11

    new_id = {int(old): new for old, new in report["ids"].items()}
    with LineClient(node.client_address) as client:
        for old_id, want in ((k, v) for k, v in expected.items() if type(k) is int):
            stats = client.yaml(b"stats-job %d" % new_id[old_id])
            state = "ready" if want["state"] == "reserved" else want["state"]
            assert {k: stats[k] for k in STATS} == {**{k: want[k] for k in STATS},
                                                   "state": state}, old_id
            if state == "delayed":  # the delay kept running since beanstalkd's view was taken
                left = want["time-left"] - (time.monotonic() - expected["taken_at"])
                assert left - 2 <= int(stats["time-left"]) <= left + 2, (left, stats)
            line = client.request(b"peek %d" % new_id[old_id])
            assert client.read_exactly(int(line.split()[2]) + 2)[:-2] == want["body"], old_id
        assert client.request(b"use emails") == b"USING emails"
        first = client.request(b"peek-buried")
        assert first.split()[1] == b"%d" % new_id[expected["emails-buried-first"]]

    tubes = run("tube", "list", "--address", target)
    assert set(tubes.stdout.decode().split()) >= {"default", "emails", "big-jobs"}
    assert run("buried", "emails", "--address", target).stdout.count(b"\n") == 4
    buried = run("buried", "emails", "--address", target, "--json")
    assert sorted(job["id"] for job in json.loads(buried.stdout)) == \
        sorted(new_id[old] for old in ids["buried"])


def damaged_copy(directory: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(directory, copy)
    path = copy / "binlog.1"
    data = bytearray(path.read_bytes())
    path.chmod(0o600)
    path.write_bytes(bytes(damage(data)))
    return copy


def end_of_data(data: bytearray) -> int:
    return len(data.rstrip(b"\x00"))


def first_record_ttr(data: bytearray, ttr_ns: int) -> bytearray:
    """``data`` with the TTR of its first record (a full one: name, then the job record, whose
    TTR is the i64 at offset 24) set to ``ttr_ns``."""
    at = 8 + int.from_bytes(data[4:8], "little") + 24
    data[at:at + 8] = struct.pack("<q", ttr_ns)
    return data


def first_record_size(data: bytearray, size: int) -> bytearray:
    """``data`` with the body size of its first record (the i32 at offset 32) set to ``size``."""
    at = 8 + int.from_bytes(data[4:8], "little") + 32
    data[at:at + 4] = struct.pack("<i", size)
    return data


def deadline_of(data: bytearray, body: bytes, deadline_ns: int) -> bytearray:
    """``data`` with the deadline of the job whose body is ``body`` (the i64 at offset 48 of
    the 80-byte record just before its body) set to ``deadline_ns``."""
    at = data.index(body + b"\r\n") - 80 + 48
    data[at:at + 8] = struct.pack("<q", deadline_ns)
    return data


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:end_of_data(d) - 3], b"truncated at offset"),
    (lambda d: d[:end_of_data(d) - 100], b"truncated at offset"),
    (lambda d: b"\x05\x00\x00\x00" + d[4:], b"binlog version 5 is not supported"),
    (lambda d: d[:end_of_data(d) + 500] + b"\x01" + d[end_of_data(d) + 501:], b"corrupt"),
    (lambda d: d[:2], b"not even a version"),
    # Values no beanstalkd writes, which import-job cannot carry: sent, the node refused them
    # part-way, and every re-run stopped at the same job again.
    (lambda d: first_record_ttr(d, 2**62), b"has a TTR of 4611686018427387904 ns"),
    (lambda d: first_record_ttr(d, -5 * 10**9), b"has a TTR of -5000000000 ns"),
    (lambda d: deadline_of(d, b"later", 2**63 - 1), b"due more than 4294967295 s from now"),
    (lambda d: first_record_size(d, (1 << 30) + 3), b"job 1 body size 1073741827"),
], ids=["cut-in-a-body", "cut-in-a-record", "version-5", "garbage-after-padding", "no-version",
        "ttr-too-long", "ttr-negative", "deadline-beyond-a-delay", "body-above-a-gibibyte"])
def test_a_binlog_that_cannot_be_read_whole_imports_nothing(migration, node, tmp_path, damage,
                                                            message):
    directory, _ids, _expected = migration
    before = current_jobs(node)
    done = run("import-binlog", str(damaged_copy(directory, tmp_path, damage)), "--to",
               address(node))
    assert done.returncode == 9, done
    assert message in done.stderr and b"nothing was imported" in done.stderr, done.stderr
    assert current_jobs(node) == before


@pytest.mark.parametrize("after_one_record, returncode, message", [
    (b"\xff\xff\xff\x7f", 9, b"tube name length 2147483647"),
    (b"", 0, b"read 1 binlog file(s): 1 job(s) in 1 tube(s) (1 ready)"),
], ids=["garbage", "zero-padding"])
def test_a_binlog_file_of_a_gibibyte_is_read_in_bounded_memory(tmp_path, after_one_record,
                                                               returncode, message):
    # A sparse file: its size costs no disk, and must cost no memory either (the reader once
    # read each file whole: MemoryError under this limit).
    directory = tmp_path / "sparse"
    directory.mkdir()
    record = (struct.pack("<i", 7) + b"default" + struct.pack(
        "<QI4xqqi4xqq5IB3x", 1, 5, 0, 60 * 10**9, 4, 1, 0, 0, 0, 0, 0, 0, 1) + b"hi\r\n")
    with open(directory / "binlog.1", "wb") as f:
        f.write(struct.pack("<i", 7) + record + after_one_record)
        f.truncate(1 << 30)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    done = subprocess.run(beanraft_argv() + ["import-binlog", str(directory), "--to",
                                             "127.0.0.1:1", "--dry-run"],
                          capture_output=True, timeout=RUN_TIMEOUT_S, env=clean_env(),
                          preexec_fn=limited)
    assert done.returncode == returncode, done.stderr
    assert message in done.stdout + done.stderr and b"Traceback" not in done.stderr


def test_a_running_beanstalkd_or_a_beanstalkd_target_imports_nothing(migration, tmp_path):
    directory, _ids, _expected = migration
    copy = tmp_path / "live"
    shutil.copytree(directory, copy)
    server = Beanstalkd(copy)
    try:
        held = run("import-binlog", str(copy), "--to", server.address)
        assert held.returncode == 9 and b"still running" in held.stderr, held.stderr
        with server.client() as client:
            before = client.yaml(b"stats")
        plain = run("import-binlog", str(directory), "--to", server.address)
        assert plain.returncode == 4 and b"not BeanRaft" in plain.stderr, plain.stderr
        with server.client() as client:
            after = client.yaml(b"stats")
        counts = ("total-jobs", "cmd-put", "current-jobs-ready", "current-jobs-buried")
        assert {k: after[k] for k in counts} == {k: before[k] for k in counts}
    finally:
        server.stop()


class CuttingProxy:
    """Forwards one client connection to ``upstream``, but only its first ``limit`` bytes: then
    it stops forwarding requests, passes on the replies for ``grace_s`` and hangs up on both."""

    def __init__(self, upstream: tuple[str, int], limit: int, grace_s: float = 1.5):
        self.upstream, self.limit, self.grace_s = upstream, limit, grace_s
        self.listener = socket.create_server((HOST, 0))
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(30)
        client, _ = self.listener.accept()
        server = socket.create_connection(self.upstream)
        replies = threading.Thread(target=self._replies, args=(server, client), daemon=True)
        replies.start()
        passed = 0
        client.settimeout(10)
        while passed < self.limit:
            data = client.recv(min(65536, self.limit - passed))
            if not data:
                break
            server.sendall(data)
            passed += len(data)
        time.sleep(self.grace_s)
        for sock in (client, server):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        replies.join(5)

    @staticmethod
    def _replies(server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_an_import_cut_part_way_reports_what_it_imported_and_a_rerun_finishes_it(migration,
                                                                                  tmp_path):
    directory, _ids, _expected = migration
    cluster = Cluster(tmp_path / "cut", size=1).start()
    try:
        node = cluster.nodes[0]
        # The checks before the import (list-jobs, stats) and the first few import-job
        # requests get through; the connection is then cut inside the pipelined window.
        proxy = CuttingProxy(node.client_address, limit=700)
        try:
            cut = run("import-binlog", str(directory), "--to", proxy.address, "--json")
        finally:
            proxy.close()
        assert cut.returncode == 8, cut
        report = json.loads(cut.stdout)
        assert 0 < report["imported"] < 11 and report["error"], report
        assert report["imported"] + len(report["unknown"]) + len(report["not_imported"]) == 11
        # Exactly the jobs it reported were created (what it sent without an answer never
        # arrived whole here, so none of the unknown ones exists).
        assert current_jobs(node) == report["imported"]
        again = run("import-binlog", str(directory), "--to", address(node), "--json")
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)
        assert (second["already_imported"], second["imported"]) == (report["imported"],
                                                                    11 - report["imported"])
        assert current_jobs(node) == 11
    finally:
        cluster.stop()


def test_the_reader_finds_what_beanstalkd_restores_from_many_compacted_files(tmp_path):
    """Small binlog files (-s) and many deletes make beanstalkd move live jobs forward and drop
    old files: the reader must follow them across files exactly as beanstalkd's own replay."""
    from beanraft.node.binlog import read_binlog

    directory = tmp_path / "small-files"
    directory.mkdir()
    rng = random.Random(5)
    server = Beanstalkd(directory, "-s", "20000")
    try:
        with server.client() as client:
            client.request(b"use churn")
            live: list[int] = []
            for n in range(1500):
                live.append(client.put(b"b%d" % n * rng.randint(1, 30), pri=rng.randint(0, 99)))
                if rng.random() < 0.7:
                    victim = live.pop(rng.randrange(len(live)))
                    assert client.request(b"delete %d" % victim) == b"DELETED"
    finally:
        server.stop()
    binlog = read_binlog(directory)
    numbers = sorted(int(path.name.split(".")[1]) for path in binlog.files)
    assert len(numbers) > 3 and numbers[0] > 1, numbers  # beanstalkd compacted and dropped files
    assert sorted(job.id for job in binlog.jobs) == sorted(live)
    restored = Beanstalkd(directory)
    try:
        with restored.client() as client:
            assert client.yaml(b"stats")["current-jobs-ready"] == str(len(live))
            for job in binlog.jobs:
                stats = client.yaml(b"stats-job %d" % job.id)
                assert (stats["tube"], int(stats["pri"])) == (job.tube, job.pri)
                line = client.request(b"peek %d" % job.id)
                assert client.read_exactly(int(line.split()[2]) + 2)[:-2] == job.body
    finally:
        restored.stop()
