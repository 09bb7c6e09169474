"""The command line as an operator meets it: ``beanraft cluster`` runs a working local cluster,
keeps it serving and restarts a node that dies, and stops it on SIGINT (even started with ``&``
from a script, where SIGINT starts ignored) or SIGTERM, and runs the README's example;
``beanraft secret`` prints secrets, and ``beanraft serve`` refuses wrong or
inconsistent cluster settings at once, with a one-line reason and a non-zero exit.

Method: the real console script in subprocesses on free loopback ports (below 32768), with a
clean environment (no BEANRAFT_* variables); every wait is bounded, and every process that a
test started, including the nodes ``beanraft cluster`` starts, is stopped by its PID.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
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


def signal_report(pid: int) -> str:
    """What a process that did not act on a signal looks like (Linux /proc): its state, its
    pending, blocked, ignored and caught signal masks, and where each of its threads sleeps."""
    lines = []
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        lines += [line for line in status if line.split(":")[0] in
                  ("State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")]
        for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
            name = (task / "comm").read_text().strip()
            wchan = (task / "wchan").read_text().strip()
            state = next(line for line in (task / "status").read_text().splitlines()
                         if line.startswith("State"))
            lines.append(f"thread {task.name} {name}: {state.split(':', 1)[1].strip()}, in {wchan}")
    except (OSError, StopIteration) as exc:
        lines.append(f"/proc/{pid}: {exc}")
    return "\n".join(lines)


def ignore_sigint_and_die_with_parent() -> None:
    """Runs in the child before exec: what a non-interactive shell does to a job started with
    ``&`` (SIGINT ignored), plus the parent-death signal so a crashed test leaves nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


class RunningCluster:
    """One ``beanraft cluster`` process on free ports, its output file and the nodes it started."""

    def __init__(self, tmp_path: Path, *flags: str, preexec=die_with_parent):
        self.client = free_port_block(3)
        self.raft = free_port_block(3, avoid=range(self.client, self.client + 3))
        self.http = free_port_block(3, avoid=[*range(self.client, self.client + 3),
                                              *range(self.raft, self.raft + 3)])
        self.data = tmp_path / "data"
        self.out_path = tmp_path / "cluster.out"
        argv = beanraft_argv() + ["cluster", "-n", "3", "--data", str(self.data),
                                  "--client-port", str(self.client), "--raft-port", str(self.raft),
                                  "--http-port", str(self.http), *flags]
        self.node_pids: set[int] = set()
        with open(self.out_path, "wb") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=clean_env(), preexec_fn=preexec)

    def output(self) -> str:
        return self.out_path.read_text()

    def wait_output(self, text: str, timeout_s: float = 30) -> str:
        return wait_for(repr(text), lambda: self.output() if text in self.output() else None,
                        timeout_s=timeout_s, describe=lambda: self.output()[-3000:])

    def children(self) -> list[int]:
        pids = children_of(self.process.pid)
        self.node_pids.update(pids)
        return pids

    def wait_ready(self, nodes=range(3)) -> None:
        wait_for("every node ready", lambda: all(http_get(self.http + i, "/readyz")[0] == 200 for i in nodes),
                 timeout_s=40, poll_s=0.1, describe=lambda: self.output()[-3000:])

    def connect(self, i: int) -> greenstalk.Client:
        return greenstalk.Client(socket.create_connection((HOST, self.client + i), timeout=20))

    def node_pid(self, i: int) -> int:
        with self.connect(i) as client:
            pid = int(client.stats()["pid"])
        self.node_pids.add(pid)
        return pid

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.children()
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in self.node_pids:
            if pid_alive(pid):  # a node the cluster command started and failed to stop
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run_cluster(tmp_path):
    """Factory: ``run_cluster(*flags, preexec=…) -> RunningCluster``; all killed at teardown."""
    started: list[RunningCluster] = []

    def start(*flags: str, **kwargs) -> RunningCluster:
        started.append(RunningCluster(tmp_path, *flags, **kwargs))
        return started[-1]

    yield start
    for running in started:
        running.cleanup()


def test_beanraft_cluster_started_in_the_background_prints_its_table_serves_and_stops_on_sigint(run_cluster):
    # Started as `beanraft cluster &` from a script would be: with SIGINT ignored.
    cluster = run_cluster(preexec=ignore_sigint_and_die_with_parent)
    text = cluster.wait_output("Ctrl-C stops the cluster")
    rows = [line.split() for line in text.splitlines() if re.match(r"^node\d+\s", line)]
    assert [row[0] for row in rows] == ["node1", "node2", "node3"], text
    for i, row in enumerate(rows):
        assert row[1:] == [f"{HOST}:{cluster.client + i}", f"{HOST}:{cluster.raft + i}",
                           f"http://{HOST}:{cluster.http + i}/status", str(cluster.data / f"node{i + 1}")], text

    cluster.wait_ready()
    connections = [cluster.connect(i) for i in range(3)]
    try:
        job_id = connections[0].put("through beanraft cluster")
        assert connections[2].peek(job_id).body == "through beanraft cluster"
        pids = {int(c.stats()["pid"]) for c in connections}
    finally:
        for connection in connections:
            connection.close()
    cluster.node_pids.update(pids)
    assert len(pids) == 3 and pids <= set(cluster.children())
    status = subprocess.run(beanraft_argv() + ["status"] + [f"{HOST}:{cluster.http + i}" for i in range(3)],
                            capture_output=True, text=True, timeout=60, env=clean_env())
    assert status.returncode == 0, status.stdout + status.stderr

    cluster.process.send_signal(signal.SIGINT)
    try:
        code = cluster.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 30 s after SIGINT:\n{signal_report(cluster.process.pid)}"
                             f"\n{cluster.output()}") from None
    assert code == 0, cluster.output()
    assert not [pid for pid in pids if pid_alive(pid)]
    assert http_get(cluster.http, "/status")[0] is None


def test_beanraft_cluster_keeps_serving_when_a_node_is_killed_restarts_it_a_bounded_number_of_times_and_stops_on_sigterm(
        run_cluster):
    cluster = run_cluster("--max-restarts", "1")
    cluster.wait_output("Ctrl-C stops the cluster")
    cluster.wait_ready()
    leader = wait_for("a leader", lambda: next(
        ([i] for i in range(3) if '"role": "leader"' in http_get(cluster.http + i, "/status")[1]),
        None), timeout_s=20, poll_s=0.1)[0]
    name = f"node{leader + 1}"
    others = [i for i in range(3) if i != leader]
    victim = cluster.node_pid(leader)
    os.kill(victim, signal.SIGKILL)

    said = cluster.wait_output(f"{name} exited (killed by SIGKILL); the cluster keeps serving on "
                               f"{', '.join(f'node{i + 1}' for i in others)}", timeout_s=10)
    assert cluster.process.poll() is None, said
    with cluster.connect(others[0]) as survivor:
        job_id = survivor.put("after the leader died")
    cluster.wait_output(f"{name} restarted", timeout_s=15)
    cluster.wait_ready([leader])
    assert cluster.node_pid(leader) != victim
    with cluster.connect(leader) as restarted:
        assert restarted.peek(job_id).body == "after the leader died"

    os.kill(cluster.node_pid(leader), signal.SIGKILL)  # the one restart allowed is used up
    cluster.wait_output(f"{name} exited (killed by SIGKILL)", timeout_s=10)
    said = cluster.wait_output("not restarting it", timeout_s=10)
    with cluster.connect(others[1]) as survivor:
        assert survivor.peek(job_id).body == "after the leader died"
    assert cluster.process.poll() is None, said

    pids = set(cluster.children())
    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(timeout=30) == 0, cluster.output()
    assert pids and not [pid for pid in pids if pid_alive(pid)]


# --------------------------------------------------------------------------- the README


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_code(section: str, language: str) -> str:
    """The first ``language`` code block under the README's ``## section`` heading."""
    text = README.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_readme_run_command_installs_every_library_its_example_imports():
    example = ast.parse(readme_code("Thirty seconds", "python"))
    imported = {alias.name.split(".")[0] for node in ast.walk(example) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(example)
                 if isinstance(node, ast.ImportFrom) and node.module}
    third_party = imported - set(sys.stdlib_module_names) - {"beanraft"}
    run = readme_code("Run it", "sh")
    installed = run.split("pip install", 1)[1].split("&&", 1)[0].split()
    assert third_party and third_party <= set(installed), (third_party, run)


def test_the_readme_example_prints_its_job_against_beanraft_cluster(run_cluster, tmp_path):
    example = readme_code("Thirty seconds", "python")
    cluster = run_cluster()
    cluster.wait_output("Ctrl-C stops the cluster")
    cluster.wait_ready()
    for i in (1, 2):  # the example's ports, moved to this cluster's
        assert f"11{300 + i}" in example
        example = example.replace(f"11{300 + i}", str(cluster.client + i))
    (tmp_path / "example.py").write_text(example)
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stdout) == (0, "resize photo 42\n"), result.stderr
    assert "it prints `resize photo 42`" in README.read_text()


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
    (tmp_path / "empty-secret").chmod(0o600)  # a secret others may read is refused first
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
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))  # the kernel's free port: one drawn first could be taken
        squatter.listen()
        a = f"{HOST}:{squatter.getsockname()[1]}"
        b = f"{HOST}:{free_ports(1)[0]}"
        result = run_serve(["--raft", a, "--peer", b, "--insecure"], clean_env(), tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and a in lines[-1], result.stderr


@pytest.mark.parametrize("content", [b"", b"BRS1\x04\x00\x00\x00garbage"], ids=["empty", "cut"])
def test_a_damaged_snapshot_stops_serve_with_status_74_and_a_one_line_reason(tmp_path, content):
    data = tmp_path / "data"
    data.mkdir()
    (data / "raft.snapshot").write_bytes(content)
    result = run_serve(["-b", str(data)], clean_env(), tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 74, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and "this node cannot start on it" in lines[-1], result.stderr
