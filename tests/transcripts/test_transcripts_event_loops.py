"""Goal: a node on uvloop (the default, ``auto``, and ``serve --event-loop uvloop``) speaks
exactly as one on asyncio's loop, and without uvloop ``auto`` falls back to asyncio while
``uvloop`` refuses to start.

Method: real ``beanraft serve`` processes. One node per loop runs the same transcript (pipelined
puts, pipelined blocking reserves that run the queue dry, a half-close that times a waiting
reserve out) and the same hang-up check: the node is stopped while a client sends 2,000
reserves and closes, and after the resume at most two of them may run (the probe of the
client's socket must see the hang-up through uvloop's transport too). The fallback runs the
node with a ``uvloop`` module on PYTHONPATH whose import fails, as on a machine without it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("uvloop")  # a dependency; a platform without it falls back (last test)

TRANSCRIPT_IN = (b"use t\r\nwatch t\r\nignore default\r\n"
                 + b"".join(b"put 0 0 60 3\r\nj%02d\r\n" % i for i in range(1, 4))
                 + b"reserve\r\nreserve\r\nreserve\r\ndelete 1\r\ndelete 2\r\ndelete 3\r\n")
TRANSCRIPT_OUT = (b"USING t\r\nWATCHING 2\r\nWATCHING 1\r\n"
                  + b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n"
                  + b"".join(b"RESERVED %d 3\r\nj%02d\r\n" % (i, i) for i in range(1, 4))
                  + b"DELETED\r\nDELETED\r\nDELETED\r\n")


def _stats(wire) -> dict[str, str]:
    wire.send(b"stats\r\n")
    header = wire.read_line()
    body = wire.read_exactly(int(header.split()[1]) + 2)
    return dict(line.split(": ", 1) for line in body.decode().splitlines()[1:] if ": " in line)


def _reserves_run_after_a_hang_up(node) -> int:
    """Stop the node, send 2,000 reserves and close, resume: how many of them ran."""
    observer = node.connect()
    before = int(_stats(observer)["cmd-reserve-with-timeout"])
    client = socket.create_connection(node.address, timeout=3)
    client.sendall(b"list-tube-used\r\n")
    assert client.recv(100) == b"USING default\r\n"
    os.kill(node.pid, signal.SIGSTOP)
    try:
        client.sendall(b"reserve-with-timeout 0\r\n" * 2_000)
        client.close()
    finally:
        os.kill(node.pid, signal.SIGCONT)
    time.sleep(0.5)
    return int(_stats(observer)["cmd-reserve-with-timeout"]) - before


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_node_on_either_loop_answers_the_same_transcript_and_drops_a_hung_up_clients_commands(
        start_server, loop):
    node = start_server("beanraft", "--event-loop", loop)
    wire = node.connect()
    wire.send(TRANSCRIPT_IN)
    wire.expect(TRANSCRIPT_OUT)
    wire.send(b"reserve\r\n")
    wire.expect_nothing(0.2)
    wire.shutdown_write()
    assert wire.recv_until_closed() == b"TIMED_OUT\r\n"
    assert _reserves_run_after_a_hang_up(node) <= 2
    assert f"event loop: {loop}" in node.stderr_path.read_text()


def test_a_node_started_without_the_flag_serves_on_uvloop(start_server, monkeypatch):
    monkeypatch.delenv("BEANRAFT_EVENT_LOOP", raising=False)
    node = start_server("beanraft")
    wire = node.connect()
    wire.send(TRANSCRIPT_IN)
    wire.expect(TRANSCRIPT_OUT)
    assert "event loop: uvloop" in node.stderr_path.read_text()


def _serve_without_uvloop(tmp_path, *args: str, timeout_s: float = 20.0):
    blocker = tmp_path / "no-uvloop"
    blocker.mkdir(exist_ok=True)
    (blocker / "uvloop.py").write_text("raise ImportError('not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    argv = [sys.executable, "-m", "beanraft.node", "serve", "-l", "127.0.0.1", *args]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=tmp_path)


def test_without_uvloop_auto_serves_on_asyncio_and_uvloop_is_refused_at_start(tmp_path,
                                                                              unused_port):
    refused = _serve_without_uvloop(tmp_path, "-p", str(unused_port), "--event-loop", "uvloop")
    output, _ = refused.communicate(timeout=30)
    assert refused.returncode == 2, output
    assert b"uvloop cannot be imported" in output
    fallback = _serve_without_uvloop(tmp_path, "-p", str(unused_port), "--event-loop", "auto")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", unused_port), timeout=2) as sock:
                    sock.sendall(b"put 0 0 60 1\r\nx\r\n")
                    assert sock.recv(100) == b"INSERTED 1\r\n"
                    break
            except (ConnectionRefusedError, socket.timeout):
                assert time.monotonic() < deadline, "the node did not start without uvloop"
                time.sleep(0.1)
    finally:
        fallback.send_signal(signal.SIGTERM)
        output, _ = fallback.communicate(timeout=30)
    assert b"event loop: asyncio" in output
