"""``beanraft backup`` fails with its exit status and one line, and leaves no file, whatever
goes wrong after it asked: a node that breaks its answer off mid-file, an address that does not
speak HTTP, a volume that fills up while the file is written.

Method: the real command as a subprocess against a small HTTP server on a loopback socket of
this test, which answers ``POST /admin/backup`` with a real backup file (``encode_head`` of a
real state), whole or cut inside its chunked body, as a node does when its child fails; the
full volume is a real tmpfs smaller than the backup.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

from backup_kit import HOST, beanraft_argv, clean_env
from hardening.test_hardening_disk_full import tmpfs

from beanraft.replication.backup_file import encode_head, header_for

BODY = os.urandom(3 << 20)  # larger than the tmpfs below, and than one 1 MiB read
FILE = encode_head(header_for(BODY, index=9, term=2, members=("127.0.0.1:7001",),
                              node="127.0.0.1:7001", cluster_time_ns=1, jobs=1)) + BODY


class OneAnswer:
    """Accepts one connection on a free loopback port, reads the request, sends ``answer``
    and closes: ``answer`` is raw bytes, so it may be an HTTP response cut anywhere."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(0.1)
        self.closing = threading.Event()
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for _attempt in range(600):  # 60 s at most, or until closed without a connection
            if self.closing.is_set():
                return
            try:
                conn, _ = self.listener.accept()
                break
            except socket.timeout:
                continue
        else:
            return
        with conn:
            conn.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            try:
                conn.sendall(self.answer)
            except OSError:
                pass

    def close(self) -> None:
        self.closing.set()
        self.thread.join(10)
        self.listener.close()


def chunked(data: bytes, cut_at: int | None = None) -> bytes:
    """An HTTP 200 with ``data`` as a chunked body in 1 MiB chunks; cut after ``cut_at`` bytes
    of body, without the rest of its chunk nor the last chunk, when given."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece)
                    for piece in (data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)))
    if cut_at is None:
        return head + body + b"0\r\n\r\n"
    return head + body[:cut_at]


def backup(address: str, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*beanraft_argv(), "backup", address, str(target), "--exact"],
                          capture_output=True, text=True, timeout=60,
                          env=clean_env(BEANRAFT_ADMIN_TOKEN="t"))


def run_against(answer: bytes, target: Path) -> subprocess.CompletedProcess:
    server = OneAnswer(answer)
    try:
        return backup(server.address, target)
    finally:
        server.close()


def assert_failed_cleanly(done: subprocess.CompletedProcess, status: int, message: str,
                          directory: Path) -> None:
    assert done.returncode == status, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("beanraft: ") and message in done.stderr, done.stderr
    assert [name for name in os.listdir(directory) if "backup" in name] == []


def test_the_command_saves_a_whole_answer(tmp_path):
    done = run_against(chunked(FILE), tmp_path / "whole.backup")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "whole.backup").read_bytes() == FILE
    assert os.stat(tmp_path / "whole.backup").st_mode & 0o777 == 0o600


def test_an_answer_broken_off_mid_file_exits_7_and_leaves_no_file(tmp_path):
    done = run_against(chunked(FILE, cut_at=(1 << 20) + 5000), tmp_path / "cut.backup")
    assert_failed_cleanly(done, 7, "broke off the backup", tmp_path)


def test_an_address_that_does_not_speak_http_exits_8_and_says_so(tmp_path):
    # The client port of a node (or of beanstalkd) instead of its --http.
    done = run_against(b"UNKNOWN_COMMAND\r\n", tmp_path / "wrong.backup")
    assert_failed_cleanly(done, 8, "does not answer HTTP", tmp_path)


def test_a_volume_that_fills_up_exits_7_and_leaves_no_file(tmp_path):
    with tmpfs(tmp_path / "small", size_mb=1) as volume:
        done = run_against(chunked(FILE), volume / "full.backup")
        assert_failed_cleanly(done, 7, "cannot write", volume)
    missing = run_against(chunked(FILE), tmp_path / "no-such-dir" / "x.backup")
    assert_failed_cleanly(missing, 7, "cannot write", tmp_path)
