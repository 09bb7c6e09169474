"""A backup child that stops producing holds the node's backup slot no longer than the stall
limit: the node kills it and reaps it, the client sees a failed backup (a 503 before the first
byte, a body cut short after it: ``beanraft backup`` exits 7 and leaves no file), the node logs
one line, and the next backup is taken whole.

Method: a real node on a thread of this test process (so that its stall limit, 60 s, can be
lowered to 2 s) with a real HTTP port; its backup children are real forks of this process, found
in /proc as this process's children. One child stops itself with SIGSTOP right after the fork
(an at-fork hook armed for that one fork), before writing anything; another is stopped from
here once its first bytes arrived, while this test's reader, with a small receive buffer, holds
back the rest of a state of 26 MB, so the child cannot have finished. Whether a child that
writes nothing is hung is judged by its CPU time: ``BackupStream.read`` is given real processes,
one that computes before it writes and one that sleeps.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from backup_kit import HOST, Pipe, cli, clean_env

from beanraft.node import backup as node_backup
from beanraft.node.cli import build_config, serve
from beanraft.node.embedded import EmbeddedNode
from beanraft.node.launcher import free_ports
from beanraft.replication.backup import BackupStream

TOKEN = "hung-child-token-1234"
STALL_S = 2.0
_ARMED = threading.Event()  # the next fork's child stops itself (and the hook disarms)


def _stop_if_armed() -> None:
    if _ARMED.is_set():
        os.kill(os.getpid(), signal.SIGSTOP)


os.register_at_fork(after_in_child=_stop_if_armed, after_in_parent=_ARMED.clear)


def forked_children() -> dict[int, str]:
    """This process's children that are forks of it (not the commands it runs): pid -> state."""
    with open("/proc/self/cmdline", "rb") as f:
        ours = f.read()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == os.getpid() and cmdline == ours:
            found[int(entry)] = fields[0]
    return found


def wait_until(what: str, check, timeout_s: float = 30.0):
    for _attempt in range(int(timeout_s / 0.02)):
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.fixture
def node(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(node_backup, "STALL_S", STALL_S)
    caplog.set_level(logging.INFO, logger="beanraft.backup")
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    (http_port,) = free_ports(1)
    context = serve.make_context("serve", [
        "-l", HOST, "-p", "0", "-b", str(tmp_path / "data"), "-F",
        "--http", f"{HOST}:{http_port}", "--admin-token-file", str(token_file)])
    embedded = EmbeddedNode(build_config(**context.params)).start()
    yield embedded, f"{HOST}:{http_port}"
    _ARMED.clear()
    embedded.stop()


def backup(address: str, path) -> object:
    return cli("backup", address, str(path), "--exact", "--timeout", "30",
               env=clean_env(BEANRAFT_ADMIN_TOKEN=TOKEN), timeout_s=120)


def stall_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "beanraft.backup" and "did not run for" in r.getMessage()]


def test_a_child_hung_before_its_first_byte_is_killed_and_the_backup_answered_503(
        node, tmp_path, caplog):
    embedded, address = node
    assert Pipe(embedded.address).run([b"put 0 0 60 5\r\nhello\r\n"]) == [b"INSERTED 1"]
    before = set(forked_children())
    _ARMED.set()
    done = backup(address, tmp_path / "hung.backup")
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert "HTTP 503: the backup failed: its child wrote nothing for 2 s" in done.stderr
    assert not _ARMED.is_set()  # the hook fired: the child stopped itself
    assert list(tmp_path.glob("*.backup")) == [] and list(tmp_path.glob(".beanraft-*")) == []
    wait_until("the hung child reaped", lambda: set(forked_children()) <= before)
    (line,) = stall_lines(caplog)
    assert "failed after 0 bytes" in line

    done = backup(address, tmp_path / "next.backup")  # the slot is free
    assert done.returncode == 0, done.stderr
    assert "1 jobs" in done.stdout


def test_a_child_hung_half_way_is_killed_and_the_answer_cut_short(node, tmp_path, caplog):
    embedded, address = node
    body = os.urandom(32_500)
    replies = Pipe(embedded.address).run(
        [b"put 0 0 60 %d\r\n%s\r\n" % (len(body) * 2, body * 2)] * 400)
    assert all(reply.startswith(b"INSERTED ") for reply in replies)
    before = set(forked_children())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no autotuning: we hold back
    sock.settimeout(30)
    sock.connect((HOST, int(address.rpartition(":")[2])))
    conn = http.client.HTTPConnection(HOST, timeout=30)
    conn.sock = sock
    try:
        conn.request("POST", "/admin/backup", body=b"",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        reply = conn.getresponse()
        assert reply.status == 200
        assert len(reply.read(4096)) == 4096
        (child,) = wait_until("the child", lambda: set(forked_children()) - before)
        os.kill(child, signal.SIGSTOP)
        assert wait_until("the child stopped", lambda: forked_children().get(child) == "T")
        with pytest.raises(http.client.IncompleteRead):
            for _chunk in range(100):  # 26 MB in reads of 1 MiB
                if not reply.read(1 << 20):
                    break
    finally:
        conn.close()
    wait_until("the hung child reaped", lambda: child not in forked_children())
    (line,) = stall_lines(caplog)
    assert f"(pid {child})" in line

    done = backup(address, tmp_path / "next.backup")  # the slot is free
    assert done.returncode == 0, done.stderr
    assert "400 jobs" in done.stdout


def stream_of(program: str) -> BackupStream:
    """A BackupStream reading what a real Python process running ``program`` writes to fd W."""
    read_fd, write_fd = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", program.replace("W", str(write_fd))],
                             pass_fds=(write_fd,))
    os.close(write_fd)
    return BackupStream(read_fd, child.pid, 1, 0.0)


def test_a_child_that_computes_before_its_first_byte_is_waited_for_and_one_that_sleeps_is_not():
    computing = stream_of("import os, time\n"
                          "began = time.process_time()\n"
                          "while time.process_time() - began < 3.0: pass\n"
                          "os.write(W, b'done')")
    try:
        assert computing.read(100, 1.0) == b"done"  # 3 s of CPU before it, stall limit 1 s
        assert computing.read(100, 1.0) == b""
    finally:
        assert computing.finish()
    sleeping = stream_of("import os, time\ntime.sleep(60)\nos.write(W, b'late')")
    try:
        assert sleeping.read(100, 1.0) is None
    finally:
        sleeping.abandon()
