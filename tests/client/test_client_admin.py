"""Goal: beanraft.client's methods for BeanRaft's admin commands (purge_tube, list_jobs, move_job,
move_buried) do what docs/reference/client.md says against a real BeanRaft node, blocking and
asyncio alike, and against the real beanstalkd 1.12 raise NotBeanRaftError (an
UnknownCommandError) while the connection stays usable.

Method: one server of each kind per module (``plain_target``); each test uses its own tubes.
The jobs are set up through the same client, and checked through stats-job and peek.
"""

from __future__ import annotations

import asyncio

import pytest

from beanraft import client as bc


@pytest.fixture
def cli(plain_target, tube):
    with bc.Client(plain_target.address, use=tube, watch=tube, failover_timeout=5) as client:
        yield client


def buried_jobs(cli, count: int) -> list[int]:
    ids = [cli.put(f"job {n}", priority=n) for n in range(count)]
    for job_id in ids:
        cli.bury(cli.reserve_job(job_id), priority=7)
    return ids


def test_admin_methods_list_move_and_purge_on_beanraft(plain_target, cli, tube):
    if plain_target.kind != "beanraft":
        pytest.skip("BeanRaft only; beanstalkd is the next test")
    buried = buried_jobs(cli, 3)
    ready = cli.put("ready one", priority=3)
    delayed = cli.put("later", delay=600)
    page = cli.list_jobs(tube, "buried", offset=1, limit=1)
    assert [(r["id"], r["state"], r["pri"], r["size"]) for r in page] == [(buried[1], "buried",
                                                                          7, 5)]
    assert [r["id"] for r in cli.list_jobs(tube)] == buried + [ready, delayed]
    assert cli.move_job(ready, tube + "-side") is True
    assert cli.move_job(ready, tube + "-side") is False
    assert cli.stats_job(ready)["tube"] == tube + "-side"
    assert cli.move_buried(tube, tube + "-dead") == 3
    assert cli.list_jobs(tube + "-dead", "buried") == cli.list_jobs(tube + "-dead")
    assert cli.purge_tube(tube + "-dead", "buried") == 3
    assert cli.purge_tube(tube, "all") == 1
    with pytest.raises(bc.NotFoundError):
        cli.peek(delayed)
    with pytest.raises(bc.NotFoundError):
        cli.purge_tube(tube + "-never", "all")
    with pytest.raises(ValueError):
        cli.purge_tube(tube, "reserved")  # never purged: refused before anything is sent
    with pytest.raises(ValueError):
        cli.list_jobs(tube, limit=1001)
    stats = cli.stats()  # the client sent session-id: its stats carry the extension counters
    assert stats["cmd-purge-tube"] >= 2 and stats["cmd-move-buried"] >= 1
    assert stats["cmd-list-jobs"] >= 3 and stats["cmd-move-job"] >= 2


def test_admin_methods_work_from_the_asyncio_client(plain_target, tube):
    if plain_target.kind != "beanraft":
        pytest.skip("BeanRaft only")

    async def main():
        async with bc.AsyncClient(plain_target.address, use=tube, watch=tube) as cli:
            job_id = await cli.put("x")
            assert await cli.move_job(job_id, tube + "-a") is True
            assert [r["id"] for r in await cli.list_jobs(tube + "-a", "ready")] == [job_id]
            assert await cli.move_buried(tube + "-a", tube) == 0
            return await cli.purge_tube(tube + "-a", "ready")

    assert asyncio.run(main()) == 1


def test_a_plain_beanstalkd_raises_not_beanraft_for_each_admin_method(plain_target, cli, tube):
    if plain_target.kind != "beanstalkd":
        pytest.skip("beanstalkd only")
    job_id = cli.put("kept")
    calls = [lambda: cli.purge_tube(tube, "all"), lambda: cli.list_jobs(tube),
             lambda: cli.move_job(job_id, "other"), lambda: cli.move_buried(tube, "other")]
    for call in calls:
        with pytest.raises(bc.NotBeanRaftError, match="not BeanRaft") as raised:
            call()
        assert isinstance(raised.value, bc.UnknownCommandError)
    assert cli.stats_job(job_id)["tube"] == tube and cli.peek(job_id).body == "kept"
