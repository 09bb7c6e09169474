"""A 3-node cluster under a seeded workload and a nemesis loses no job and never double-delivers.

Method (faultkit.harness): three real ``beanraft serve`` processes, each in a network namespace of
its own when root can have them (else on loopback, where SIGSTOP is the only isolation);
producers and workers on every node record a Jepsen-style history while the nemesis kills -9 and
restarts nodes, pauses them, cuts a node's (or the leader's) raft links in both directions, and
fills a node's data directory (a tmpfs) up.
Then everything is healed, the queue is drained through one node, and the checker looks for lost
jobs, double delivery, resurrection, divergent replicas and wrong answers.

Every run prints its seed; ``BEANRAFT_FAULTS_SEED=N`` replays it. ``BEANRAFT_SOAK=600`` adds a
600-second soak with every fault kind (also: ``python tests/tools/soak.py --seconds 600``).
A failed run keeps its history, report and node logs in the directory the report names.
"""

from __future__ import annotations

import os

import pytest

from faultkit import netns
from faultkit.harness import RunConfig, random_seed, run

SEED = int(os.environ.get("BEANRAFT_FAULTS_SEED") or random_seed())


def _run(**settings):
    result = run(RunConfig(seed=SEED, **settings))
    print(result.summary())
    return result


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kills_pauses_partitions_and_a_full_disk_lose_no_job_and_never_double_deliver():
    result = _run(seconds=60)
    assert result.faults >= 4, result.summary()
    assert result.ok, f"seed {SEED} (replay: BEANRAFT_FAULTS_SEED={SEED})\n{result.summary()}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_full_disk_gives_out_of_memory_keeps_reads_working_and_recovers():
    why = netns.unavailable_reason()
    if why:
        pytest.skip(f"needs root for tmpfs data directories: {why}")
    result = _run(seconds=25, kinds=("disk",), fault_duration_s=(3.0, 4.0))
    full = [o for o in result.observations if o.startswith("disk full")]
    healed = [o for o in result.observations if o.startswith("disk space back")]
    assert full and healed, result.summary()
    for line in full:
        assert "put -> fail OUT_OF_MEMORY" in line and "peek 1 -> info" not in line, line
    assert result.ok, f"seed {SEED} (replay: BEANRAFT_FAULTS_SEED={SEED})\n{result.summary()}"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BEANRAFT_SOAK"), reason="set BEANRAFT_SOAK=<seconds>")
@pytest.mark.timeout(int(os.environ.get("BEANRAFT_SOAK") or 0) + 900)
def test_soak_with_every_fault_kind():
    result = _run(seconds=float(os.environ["BEANRAFT_SOAK"]))
    assert result.ok, f"seed {SEED} (replay: BEANRAFT_FAULTS_SEED={SEED})\n{result.summary()}"
