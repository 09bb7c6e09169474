"""A lone node with a data directory and the default durability runs one sync helper process
(replication/background_sync.py) from its first batch of several commands on; the helper ends
with its node, even one killed with SIGKILL, and a node that never fsyncs before replying (-F,
-f MS) or keeps nothing on disk runs none.

Method: real ``beanraft serve`` processes; the helper is found among the node's children by its
command line (/proc). The jobs put before the kill, pipelined (so that batches of several
commands, which the helper syncs, are formed), are all there after a restart on the same directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time

import pytest

JOBS = 400
GONE_WITHIN_S = 10.0


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _helpers(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"sync_helper.py" in f.read():
                    found.append(child)
        except FileNotFoundError:
            pass
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_helper_ends_with_its_node_killed_with_sigkill_and_every_job_stays(
        start_server, tmp_path):
    node = start_server("beanraft", "-b", str(tmp_path))
    wire = node.connect()
    wire.send(b"".join(b"put 0 0 60 3\r\njob\r\n" for _ in range(JOBS)))
    wire.expect(b"".join(b"INSERTED %d\r\n" % (i + 1) for i in range(JOBS)))
    wire.close()
    helpers = _helpers(node.pid)
    assert len(helpers) == 1, helpers
    node.kill()
    deadline = time.monotonic() + GONE_WITHIN_S
    while _running(helpers[0]):
        assert time.monotonic() < deadline, "the helper outlived its node"
        time.sleep(0.05)
    node.start()
    wire = node.connect()
    stats = wire.yaml(b"stats-tube default\r\n")
    assert stats["current-jobs-ready"] == str(JOBS)


@pytest.mark.parametrize("flags", [("-F",), ("-f", "50"), ()], ids=["-F", "-f 50", "no -b"])
def test_no_helper_runs_where_nothing_is_synced_before_a_reply(start_server, tmp_path, flags):
    data = ("-b", str(tmp_path)) if flags else ()
    node = start_server("beanraft", *data, *flags)
    wire = node.connect()
    wire.send(b"".join(b"put 0 0 60 3\r\njob\r\n" for _ in range(JOBS)))
    wire.expect(b"".join(b"INSERTED %d\r\n" % (i + 1) for i in range(JOBS)))
    wire.close()
    assert _helpers(node.pid) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="-u needs root")
def test_under_u_the_helper_runs_as_that_user_or_the_node_syncs_in_its_loop(start_server):
    """The helper starts with the first batch it syncs, after the node became the user ``-u``
    names: never as root. Where that user cannot run the interpreter (one installed under a
    private home, as on some build machines), the node says so once and syncs in its loop."""
    parent = tempfile.mkdtemp(prefix="br-u-")
    node = None
    try:
        os.chmod(parent, 0o755)  # the data directory must be reachable by the user
        data = os.path.join(parent, "data")
        os.mkdir(data)
        user = pwd.getpwnam("nobody")
        node = start_server("beanraft", "-b", data, "-u", "nobody")
        wire = node.connect()
        wire.send(b"".join(b"put 0 0 60 3\r\njob\r\n" for _ in range(JOBS)))
        wire.expect(b"".join(b"INSERTED %d\r\n" % (i + 1) for i in range(JOBS)))
        wire.close()
        helpers = _helpers(node.pid)
        if helpers:
            assert [_uid(pid) for pid in helpers] == [user.pw_uid]
        else:
            assert "cannot start the sync helper" in node.diagnostics()
        assert _uid(node.pid) == user.pw_uid
    finally:
        if node is not None:
            node.stop()  # before its data directory goes
        shutil.rmtree(parent, ignore_errors=True)


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")
