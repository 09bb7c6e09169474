"""A big queue restarts whole, and churn never grows the data directory without bound.

Method: a real `beanraft serve -b DIR` process (BeanRaft target only); jobs go in through a
pipelined raw socket; `kill -9` and restart; the data directory's size is read from the blocks
it really uses (reserved journal space included). Times are printed, not asserted: the figures
that matter are measured by tests/tools/scale.py (see docs/reference/performance.md).
"""

from __future__ import annotations

import time

import pytest
from pipeline import dir_size, pipeline, put_commands

MIB = 1024 * 1024


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


def start(start_server, target_kind, *args):
    if target_kind != "beanraft":
        pytest.skip("exercises BeanRaft's own journal and snapshots")
    return start_server(target_kind, *args)


def ready_count(node) -> int:
    wire = node.connect(timeout=30)
    try:
        return int(wire.yaml(b"stats")["current-jobs-ready"])
    finally:
        wire.close()


@pytest.mark.timeout(180)
def test_a_node_holding_100000_jobs_restarts_with_all_of_them(start_server, target_kind, data_dir):
    node = start(start_server, target_kind, "-b", str(data_dir), "--snapshot-entries", "200")
    replies = pipeline(node.address, put_commands(100_000))
    assert all(r.startswith(b"INSERTED ") for r in replies)
    node.kill()
    began = time.monotonic()
    node.restart()
    count = ready_count(node)
    print(f"restart with 100,000 jobs served after {time.monotonic() - began:.2f} s")
    assert count == 100_000
    wire = node.connect()
    wire.send(b"put 0 0 60 1\r\nz\r\n")
    wire.expect(b"INSERTED 100001\r\n")


@pytest.mark.timeout(180)
def test_put_and_delete_churn_keeps_the_data_directory_bounded(start_server, target_kind, data_dir):
    node = start(start_server, target_kind, "-b", str(data_dir), "--snapshot-entries", "500")
    sizes = []
    for round_no in range(6):
        puts = pipeline(node.address, put_commands(5_000))
        ids = [int(r.split()[1]) for r in puts]
        deletes = pipeline(node.address, [b"delete %d\r\n" % i for i in ids])
        assert set(deletes) == {b"DELETED"}
        sizes.append(dir_size(data_dir))
    print("data directory after each 5,000 put+delete cycles (MiB):",
          [round(s / MIB, 1) for s in sizes])
    assert max(sizes) < 50 * MIB
    assert sizes[-1] <= sizes[1] + 4 * MIB, "the data directory keeps growing under churn"
    assert ready_count(node) == 0
