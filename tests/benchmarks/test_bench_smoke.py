"""The benchmark's command line, as the README and docs/reference/performance.md quote it, still
runs end to end: it starts beanstalkd and a BeanRaft node, measures, prints the table and exits 0.

Method: ``python tests/benchmarks/bench.py`` in a subprocess with tiny time caps; the figures are
not judged (this machine is shared), only that every row was measured and nothing was left running.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench.py"


@pytest.mark.timeout(180)
def test_the_benchmark_command_measures_every_row_prints_the_table_and_exits_zero(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH), "--ratios", "--targets", "beanstalkd-b,beanraft", "--seconds", "1",
         "--workloads", "put,rd1", "--max-preload", "200", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.split("\n\n")[0]  # the ratio summary follows after an empty line
    rows = {tuple(re.split(r"\s{2,}", line)[:2]) for line in table.splitlines()
            if line.startswith(("beanstalkd", "beanraft "))}
    assert rows == {("beanstalkd", "put pipelined"), ("beanstalkd", "reserve+delete 1-at-a-time"),
                    ("beanstalkd-b", "put pipelined"), ("beanstalkd-b", "reserve+delete 1-at-a-time"),
                    ("beanraft", "put pipelined"), ("beanraft", "reserve+delete 1-at-a-time")}, result.stdout
    assert "FAILED" not in result.stdout
    # the ratio summary: put/s to beanstalkd -b measured (a number), the rows not run shown as "-"
    summary = [line.split() for line in result.stdout.splitlines() if line.startswith("beanraft ")][-1]
    assert re.fullmatch(r"\d+\.\d+x", summary[1]) and summary[2:4] == ["-", "-"], result.stdout
    assert list(tmp_path.iterdir()) == []  # the servers' data directories were removed


@pytest.mark.timeout(180)
def test_the_cluster_s_leader_and_follower_are_each_measured_on_a_cluster_started_for_it(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH), "--targets", "cluster", "--workloads", "put1", "--seconds", "0.3",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    ready = re.findall(r"\[round 1\] cluster for (cluster-\w+) ready on port\(s\) (cluster-\w+)=(\d+)",
                       result.stderr)
    assert [(label, shown) for label, shown, _port in ready] == [
        ("cluster-leader", "cluster-leader"), ("cluster-follower", "cluster-follower")], result.stderr
    assert ready[0][2] != ready[1][2]  # two clusters, not one port measured twice
    rows = [line.split()[0] for line in result.stdout.splitlines() if "put 1-at-a-time" in line]
    assert rows == ["beanstalkd", "cluster-leader", "cluster-follower"], result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(180)
def test_the_client_benchmark_command_measures_every_row_and_exits_zero():
    """client_bench.py, as docs/reference/performance.md quotes it, with a tiny count."""
    result = subprocess.run(
        [sys.executable, str(BENCH.with_name("client_bench.py")), "--count", "30", "--rounds", "1",
         "--targets", "beanstalkd,cluster"],
        capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("beanstalkd put ") and "AsyncClient[16]" in line for line in lines)
    assert any(line.startswith("beanstalkd reserve+delete") for line in lines)
    assert any(line.startswith("beanstalkd client CPU per put:") for line in lines)
    assert any(line.startswith("cluster    put[16]") and "put-key[16]" in line for line in lines)


@pytest.mark.timeout(240)
def test_the_scale_command_measures_every_row_and_the_memory_on_a_fresh_server(tmp_path):
    """scale_bench.py, as docs/reference/performance.md quotes it, with a small queue. The rates
    leave far more jobs behind than ``--jobs``: a fill that went on from there would add none and
    report no memory per job."""
    result = subprocess.run(
        [sys.executable, str(BENCH.with_name("scale_bench.py")), "--jobs", "20000", "--idle", "200",
         "--seconds", "1", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=210, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1:]
             for line in result.stdout.splitlines() if not line.startswith("#")}
    for label in ("put/s, empty queue", "cycle/s, 200 idle connections", "put/s, 20,000 ready jobs",
                  "cycle/s, 20,000 ready jobs", "kill -9, then all jobs ready (s)"):
        assert len(cells[label]) == 2 and "-" not in cells[label], result.stdout
    assert all(int(value.replace(",", "")) > 0 for value in cells["RSS per ready job (bytes)"]), \
        result.stdout + result.stderr
    assert "from 0;" in result.stderr and "only" not in result.stdout, result.stderr
    assert list(tmp_path.iterdir()) == []
