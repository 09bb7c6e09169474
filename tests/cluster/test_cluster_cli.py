"""The command line as an operator meets it: ``beanraft cluster`` runs a working local cluster and
stops it on Ctrl-C, ``beanraft secret`` prints secrets, and ``beanraft serve`` refuses wrong or
inconsistent cluster settings at once, with a one-line reason and a non-zero exit.

Method: the real console script in subprocesses on free loopback ports (below 32768), with a
clean environment (no BEANRAFT_* variables); every wait is bounded, and every process that a
test started, including the nodes ``beanraft cluster`` starts, is stopped by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import greenstalk
import pytest
from cluster_harness import (HOST, beanraft_argv, clean_env, die_with_parent, free_port_block, free_ports,
                             http_get, pid_alive, wait_for)


def children_of(pid: int) -> list[int]:
    """The PIDs of a process's children (Linux /proc)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def printed_table(path: Path) -> str | None:
    """What ``beanraft cluster`` printed, once it has printed its whole table."""
    text = path.read_text()
    return text if "Ctrl-C stops the cluster" in text else None


def test_beanraft_cluster_prints_its_table_serves_on_every_node_and_stops_on_sigint(tmp_path):
    client = free_port_block(3)
    raft = free_port_block(3, avoid=range(client, client + 3))
    http = free_port_block(3, avoid=[*range(client, client + 3), *range(raft, raft + 3)])
    data = tmp_path / "data"
    out_path = tmp_path / "cluster.out"
    argv = beanraft_argv() + ["cluster", "-n", "3", "--data", str(data), "--client-port", str(client),
                              "--raft-port", str(raft), "--http-port", str(http)]
    node_pids: set[int] = set()
    with open(out_path, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=clean_env(), preexec_fn=die_with_parent)
    try:
        text = wait_for("the table", lambda: printed_table(out_path), timeout_s=30,
                        describe=out_path.read_text)
        node_pids.update(children_of(process.pid))
        rows = [line.split() for line in text.splitlines() if re.match(r"^\d+\s", line)]
        assert [row[0] for row in rows] == ["1", "2", "3"], text
        for i, row in enumerate(rows):
            assert row[1:] == [f"{HOST}:{client + i}", f"{HOST}:{raft + i}",
                               f"http://{HOST}:{http + i}/status", str(data / f"node{i + 1}")], text

        wait_for("every node ready", lambda: all(http_get(http + i, "/readyz")[0] == 200 for i in range(3)),
                 timeout_s=40, poll_s=0.1, describe=lambda: out_path.read_text()[-3000:])
        connections = [greenstalk.Client(socket.create_connection((HOST, client + i), timeout=20))
                       for i in range(3)]
        try:
            job_id = connections[0].put("through beanraft cluster")
            assert connections[2].peek(job_id).body == "through beanraft cluster"
            pids = {int(c.stats()["pid"]) for c in connections}
        finally:
            for connection in connections:
                connection.close()
        node_pids.update(pids)
        assert len(pids) == 3 and pids <= set(children_of(process.pid))
        status = subprocess.run(beanraft_argv() + ["status"] + [f"{HOST}:{http + i}" for i in range(3)],
                                capture_output=True, text=True, timeout=60, env=clean_env())
        assert status.returncode == 0, status.stdout + status.stderr

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, out_path.read_text()
        assert not [pid for pid in pids if pid_alive(pid)]
        assert http_get(http, "/status")[0] is None
    finally:
        if process.poll() is None:
            node_pids.update(children_of(process.pid))
            process.kill()
            process.wait(timeout=10)
        for pid in node_pids:
            if pid_alive(pid):  # a node the cluster command started and failed to stop
                os.kill(pid, signal.SIGKILL)


def test_beanraft_secret_prints_a_new_url_safe_secret_on_one_line_each_time():
    secrets = []
    for _ in range(2):
        result = subprocess.run(beanraft_argv() + ["secret"], capture_output=True, text=True,
                                timeout=60, env=clean_env())
        assert result.returncode == 0
        assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
        secrets.append(result.stdout.strip())
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32,}", s) for s in secrets), secrets
    assert secrets[0] != secrets[1]


# --------------------------------------------------------------------------- refused settings


def run_serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Runs ``beanraft serve`` and expects it to exit by itself (a node that starts is killed)."""
    argv = beanraft_argv() + ["serve", "-l", HOST, "-p", str(free_ports(1)[0]), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        pytest.fail(f"beanraft serve {' '.join(args)} started instead of refusing its settings")


SECRET = {"BEANRAFT_CLUSTER_SECRET": "s3cret-for-tests"}

#: name -> (flags, environment, words the reason must contain); {a} {b} {c} are free raft
#: addresses, {tmp} the test's directory (it holds an empty file called empty-secret).
BAD_SETTINGS = {
    "peer without --raft": (["--peer", "{b}", "--peer", "{c}"], SECRET, "--raft"),
    "own address in --peer": (["--raft", "{a}", "--peer", "{a}", "--peer", "{b}"], SECRET, "{a}"),
    "the same peer twice": (["--raft", "{a}", "--peer", "{b}", "--peer", "{b}"], SECRET, "twice"),
    "peer is not HOST:PORT": (["--raft", "{a}", "--peer", "localhost"], SECRET,
                              "'localhost' is not HOST:PORT"),
    "raft port is not a number": (["--raft", "127.0.0.1:x", "--peer", "{b}"], SECRET, "is not HOST:PORT"),
    "raft port out of range": (["--raft", "127.0.0.1:70000", "--peer", "{b}"], SECRET, "is not HOST:PORT"),
    "http is not HOST:PORT": (["--raft", "{a}", "--peer", "{b}", "--http", "127.0.0.1"], SECRET,
                              "is not HOST:PORT"),
    "cluster without a secret": (["--raft", "{a}", "--peer", "{b}", "--peer", "{c}"], {}, "secret"),
    "missing secret file": (["--raft", "{a}", "--peer", "{b}", "--cluster-secret-file",
                             "{tmp}/no-such-file"], {}, "no-such-file"),
    "empty secret file": (["--raft", "{a}", "--peer", "{b}", "--cluster-secret-file",
                           "{tmp}/empty-secret"], {}, "empty"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_wrong_or_inconsistent_cluster_settings_fail_at_start_with_a_one_line_reason(case, tmp_path):
    a, b, c = (f"{HOST}:{port}" for port in free_ports(3))
    (tmp_path / "empty-secret").write_text("\n")
    flags, extra_env, words = BAD_SETTINGS[case]
    flags = [flag.format(a=a, b=b, c=c, tmp=tmp_path) for flag in flags]
    words = words.format(a=a)
    result = run_serve(flags, clean_env(**extra_env), tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and words in lines[-1], result.stderr
    assert not list(tmp_path.glob("**/raft.journal"))  # refused before touching any data


def test_a_raft_address_already_in_use_fails_at_start_with_a_one_line_reason(tmp_path):
    a, b = (f"{HOST}:{port}" for port in free_ports(2))
    with socket.socket() as squatter:
        squatter.bind((HOST, int(a.rsplit(":", 1)[1])))
        squatter.listen()
        result = run_serve(["--raft", a, "--peer", b, "--insecure"], clean_env(), tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and a in lines[-1], result.stderr
