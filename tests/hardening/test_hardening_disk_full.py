"""A full data volume: new jobs are refused at once, reads and deletes keep working, deleted jobs
give their space back without outside help, a node restarts on a full volume, and no acknowledged
job is lost.

Method: real `beanraft serve` processes -- one node, then a three-node cluster -- whose -b
directories are real 64 MB tmpfs mounts. A producer puts 60 KB jobs until it is refused; every
reply is timed. Half of the jobs are deleted, puts must be accepted again; then the rest of each
volume is taken by a filler file, the processes are killed with SIGKILL and started again on the
full volumes. The single-node test runs against beanstalkd 1.12 on the same volume too: both
must refuse with OUT_OF_MEMORY within 2 s, keep the connection and the reads, take puts again
after the deletes and keep every job over a kill -9. (beanstalkd 1.12 itself does not start on a
volume it filled: "walinit: makenextfile", exit 1, so the restart on a full volume is BeanRaft's
leg alone.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from cluster.cluster_harness import START_ATTEMPTS, Cluster, LineClient

VOLUME_MB = 64
BODY_BYTES = 60_000
REPLY_S = 2.0  # the longest a refused put, a read or a delete may wait for its reply
RECLAIM_S = 30.0  # puts accepted again this long after the deletes, at the latest
MAX_PUTS = 2_000  # 120 MB: more than any 64 MB volume can hold


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int = VOLUME_MB):
    """A fresh tmpfs of ``size_mb`` mounted on ``path`` for the block; unmounted after it."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700",
                              "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs root to mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_up(path: Path) -> Path:
    """Take every free byte of ``path``'s file system with a filler file; return its path."""
    filler = path / "filler"
    chunk = bytes(1 << 20)
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            for _ in range(VOLUME_MB * 256):
                try:
                    f.write(chunk[:size])
                except OSError:
                    break
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    assert free == 0, f"{free} bytes still free on {path}"
    return filler


def body(n: int) -> bytes:
    return (b"job %08d " % n).ljust(BODY_BYTES, b"x")


def timed(client: LineClient, line: bytes) -> tuple[bytes, float]:
    began = time.monotonic()
    reply = client.request(line, timeout_s=10.0)
    return reply, time.monotonic() - began


def put_until_refused(client: LineClient, jobs: dict[int, bytes]) -> None:
    """Put jobs until the server refuses one; the refusal must come within REPLY_S."""
    for n in range(MAX_PUTS):
        data = body(len(jobs) + n)
        reply, took = timed(client, b"put 0 0 120 %d\r\n%s" % (len(data), data))
        if reply.startswith(b"INSERTED "):
            jobs[int(reply.split()[1])] = data
            continue
        assert reply == b"OUT_OF_MEMORY", reply
        assert took <= REPLY_S, f"the refused put was answered after {took:.1f} s"
        return
    pytest.fail(f"{MAX_PUTS} puts of {BODY_BYTES} bytes fitted on a {VOLUME_MB} MB volume")


def assert_reads_answer(client: LineClient, job_id: int, data: bytes) -> None:
    reply, took = timed(client, b"peek %d" % job_id)
    assert reply == b"FOUND %d %d" % (job_id, len(data)), reply
    assert client.read_exactly(len(data) + 2)[:-2] == data
    assert took <= REPLY_S, f"peek answered after {took:.1f} s"
    reply, took = timed(client, b"stats")
    assert reply.startswith(b"OK "), reply
    client.read_exactly(int(reply[3:]) + 2)
    assert took <= REPLY_S, f"stats answered after {took:.1f} s"


def delete_half(client: LineClient, jobs: dict[int, bytes]) -> None:
    for job_id in sorted(jobs)[: len(jobs) // 2]:
        reply, took = timed(client, b"delete %d" % job_id)
        assert reply == b"DELETED", (job_id, reply)
        assert took <= REPLY_S, f"delete answered after {took:.1f} s"
        del jobs[job_id]


def volume_report(*volumes: Path) -> str:
    """Each volume's free bytes and files with their sizes: what a failure needs to be read."""
    lines = []
    for volume in volumes:
        st = os.statvfs(volume)
        lines.append(f"{volume}: {st.f_bavail * st.f_frsize} bytes free")
        for path in sorted(volume.rglob("*")):
            if path.is_file():
                lines.append(f"  {path.relative_to(volume)}: {path.stat().st_size} bytes, "
                             f"{path.stat().st_blocks * 512} allocated")
    return "\n".join(lines)


def put_accepted_again(client: LineClient, jobs: dict[int, bytes], *volumes: Path) -> float:
    """Seconds until a put is accepted again (fails after RECLAIM_S, with ``volumes`` shown)."""
    began = time.monotonic()
    while True:
        data = body(10_000 + len(jobs))
        reply, _took = timed(client, b"put 0 0 120 %d\r\n%s" % (len(data), data))
        if reply.startswith(b"INSERTED "):
            jobs[int(reply.split()[1])] = data
            return time.monotonic() - began
        assert reply == b"OUT_OF_MEMORY", reply
        assert time.monotonic() - began < RECLAIM_S, \
            "puts still refused after the deletes\n" + volume_report(*volumes)
        time.sleep(0.5)


def assert_all_there(client: LineClient, jobs: dict[int, bytes]) -> None:
    for job_id, data in sorted(jobs.items()):
        reply = client.request(b"peek %d" % job_id)
        assert reply == b"FOUND %d %d" % (job_id, len(data)), (job_id, reply)
        assert client.read_exactly(len(data) + 2)[:-2] == data, job_id


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["beanstalkd", "beanraft"])
def test_a_full_volume_refuses_puts_at_once_keeps_reads_and_takes_puts_again_after_deletes(
        kind, start_server, tmp_path):
    with tmpfs(tmp_path / "data") as data:
        server = start_server(kind, "-b", str(data))
        jobs: dict[int, bytes] = {}
        with LineClient(server.address) as client:
            put_until_refused(client, jobs)
            assert len(jobs) * BODY_BYTES >= 16 << 20, f"only {len(jobs)} jobs fitted"
            last = max(jobs)
            assert_reads_answer(client, last, jobs[last])  # the same connection, still open
            delete_half(client, jobs)
            put_accepted_again(client, jobs, data)
        server.kill()
        server.restart()
        with LineClient(server.address) as client:
            assert_all_there(client, jobs)


@pytest.mark.timeout(90)
def test_a_single_node_restarts_on_a_full_volume_and_serves(start_server, tmp_path):
    with tmpfs(tmp_path / "data") as data:
        server = start_server("beanraft", "-b", str(data))
        jobs: dict[int, bytes] = {}
        with LineClient(server.address) as client:
            put_until_refused(client, jobs)
        filler = fill_up(data)
        server.kill()
        server.restart()  # waits until the node answers
        with LineClient(server.address) as client:
            last = max(jobs)
            assert_reads_answer(client, last, jobs[last])
            reply, took = timed(client, b"put 0 0 1 1\r\nx")
            assert reply == b"OUT_OF_MEMORY" and took <= REPLY_S, (reply, took)
            delete_half(client, jobs)
            assert_all_there(client, jobs)
            filler.unlink()
            put_accepted_again(client, jobs, data)
        server.kill()
        server.restart()
        with LineClient(server.address) as client:
            assert_all_there(client, jobs)


@pytest.mark.timeout(120)
def test_a_cluster_on_full_volumes_answers_refuses_at_once_reclaims_and_restarts(tmp_path):
    root = tmp_path / "data"
    with contextlib.ExitStack() as mounts:
        # One volume per node name the harness may use: it renames the nodes when it retries a
        # start that lost a port race.
        names = [f"node{i}" + (f"-try{attempt}" if attempt > 1 else "")
                 for attempt in range(1, START_ATTEMPTS + 1) for i in (1, 2, 3)]
        mounted = {mounts.enter_context(tmpfs(root / name)) for name in names}
        cluster = Cluster(tmp_path / "cluster", data_root=root)
        mounts.callback(cluster.stop)
        cluster.start()
        volumes = [Path(n.data_dir) for n in cluster.nodes]
        assert set(volumes) <= mounted, f"not on the volumes: {volumes}"
        follower, other = cluster.followers()
        jobs: dict[int, bytes] = {}
        with LineClient(follower.client_address) as producer:
            put_until_refused(producer, jobs)
            assert len(jobs) * BODY_BYTES >= 16 << 20, f"only {len(jobs)} jobs fitted"
            last = max(jobs)
            assert_reads_answer(producer, last, jobs[last])  # the same connection, still open
            for node in cluster.nodes:  # a new connection to any node, reads only
                with LineClient(node.client_address) as reader:
                    assert_reads_answer(reader, last, jobs[last])
            with LineClient(other.client_address) as worker:
                delete_half(worker, jobs)
            put_accepted_again(producer, jobs, *volumes)
        for volume in volumes:
            fill_up(volume)
        for node in cluster.nodes:
            node.kill()
        for node in cluster.nodes:
            node.start()
        cluster.wait_ready(timeout_s=30)
        leader = cluster.leader()
        with LineClient(leader.client_address) as client:
            assert_all_there(client, jobs)
            reply, took = timed(client, b"put 0 0 1 1\r\nx")
            assert reply == b"OUT_OF_MEMORY" and took <= REPLY_S, (reply, took)
        with LineClient(cluster.followers()[0].client_address) as client:
            last = max(jobs)
            client.request(b"list-tube-used")  # its session is open (OPEN is committed)
            time.sleep(0.3)  # /status is refreshed every 0.1 s
            before = [cluster.statuses()[n.name]["commit_index"] for n in cluster.nodes]
            for _ in range(20):
                assert_reads_answer(client, last, jobs[last])
            after = [cluster.statuses()[n.name]["commit_index"] for n in cluster.nodes]
            assert after == before, "reads wrote to the log"
            delete_half(client, jobs)
            assert_all_there(client, jobs)
