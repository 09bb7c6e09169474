"""Goal: beanraft.client's whole greenstalk-shaped API works against the real beanstalkd 1.12 and
a real BeanRaft node, blocking and asyncio alike.

Method: one server of each kind per module (tests use their own tubes); every public method is
called and every error a server can cause through the API is provoked. Signatures are compared
with greenstalk's own, which is only read here, never used by the client.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading

import greenstalk
import pytest

from beanraft import client as bc
from cluster.cluster_harness import LineClient, wait_for



@pytest.fixture
def cli(plain_target, tube):
    with bc.Client(plain_target.address, use=tube, watch=tube, failover_timeout=5) as client:
        yield client


def test_every_greenstalk_method_exists_with_greenstalks_parameters_and_defaults():
    for name, theirs in inspect.getmembers(greenstalk.Client, inspect.isfunction):
        if name.startswith("_"):
            continue
        for cls in (bc.Client, bc.AsyncClient):
            ours = inspect.signature(getattr(cls, name)).parameters
            for param in inspect.signature(theirs).parameters.values():
                assert param.name in ours, f"{cls.__name__}.{name} lacks {param.name}"
                assert ours[param.name].default == param.default, f"{name}({param.name})"
    for error in ("NotFoundError", "TimedOutError", "DeadlineSoonError", "BuriedError",
                  "JobTooBigError", "BadFormatError", "NotIgnoredError", "DrainingError",
                  "UnknownResponseError", "BeanstalkdError", "Error"):
        assert issubclass(getattr(bc, error), bc.Error)


def test_put_reserve_delete_round_trip_text_and_the_job_is_gone(cli):
    job_id = cli.put("héllo wörld")
    job = cli.reserve(timeout=5)
    assert (job.id, job.body) == (job_id, "héllo wörld")
    cli.delete(job)
    with pytest.raises(bc.NotFoundError):
        cli.peek(job_id)


def test_a_binary_body_survives_byte_for_byte_and_ids_are_accepted_for_jobs(plain_target, tube):
    body = bytes(range(256)) + b"\r\n\r\n"
    with bc.Client(plain_target.address, encoding=None, use=tube, watch=[tube]) as client:
        job_id = client.put(body)
        assert client.reserve(timeout=0).body == body
        assert client.peek(job_id).body == body
        client.delete(job_id)
        with pytest.raises(TypeError):
            client.put("text needs an encoding")


def test_priority_delay_and_ttr_reach_the_server(cli):
    later = cli.put("later", priority=2**32 - 1, delay=100, ttr=7)
    stats = cli.stats_job(later)
    assert (stats["pri"], stats["delay"], stats["ttr"], stats["state"]) == (2**32 - 1, 100, 7, "delayed")
    assert cli.peek_delayed().id == later
    assert cli.kick(10) == 1
    assert cli.peek_ready().id == later
    cli.delete(later)


def test_reserve_times_out_and_reserve_job_takes_a_given_job(cli):
    with pytest.raises(bc.TimedOutError):
        cli.reserve(timeout=0)
    first, second = cli.put("a"), cli.put("b")
    assert cli.reserve_job(second).id == second
    with pytest.raises(bc.NotFoundError):
        cli.reserve_job(second)  # reserved already
    cli.delete(second)
    cli.delete(first)


def test_job_methods_are_bound_to_the_client(cli):
    job_id = cli.put("bound")
    job = cli.reserve(timeout=1)
    job.touch()
    assert job.stats()["state"] == "reserved"
    job.release(priority=5, delay=0)
    job = cli.reserve(timeout=1)
    job.bury()
    assert cli.peek_buried().id == job_id
    cli.kick_job(job)
    job = cli.reserve(timeout=1)
    job.delete()
    with pytest.raises(bc.NotFoundError):
        job.touch()
    with pytest.raises(bc.NotFoundError):
        job.release()
    with pytest.raises(bc.NotFoundError):
        job.bury()


def test_tubes_are_used_watched_and_ignored_as_in_greenstalk(plain_target, tube):
    with bc.Client(plain_target.address, use=tube, watch=[tube, "default"]) as client:
        assert client.using() == tube
        assert client.watching() == ["default", tube]
        assert client.ignore("default") == 1
        with pytest.raises(bc.NotIgnoredError):
            client.ignore(tube)
        assert client.watch(tube + "x") == 2
        assert tube in client.tubes()
        client.use("default")
        assert client.using() == "default"
        with pytest.raises(bc.BadFormatError):
            client.use("-bad name")


def test_stats_and_pause_tube(cli, tube):
    cli.put("s")
    assert cli.stats_tube(tube)["current-jobs-ready"] == 1
    stats = cli.stats()
    assert isinstance(stats["current-connections"], int) and isinstance(stats["version"], str)
    cli.pause_tube(tube, 1)
    assert cli.stats_tube(tube)["pause"] == 1
    cli.delete(cli.reserve(timeout=3))


def test_errors_a_server_can_cause_through_the_api(cli):
    with pytest.raises(bc.JobTooBigError):
        cli.put(b"x" * 70000)
    with pytest.raises(bc.NotFoundError):
        cli.delete(2**63)
    with pytest.raises(bc.NotFoundError):
        cli.peek_buried()
    job_id = cli.put("short", ttr=1)
    cli.reserve(timeout=1)
    with pytest.raises(bc.DeadlineSoonError):
        cli.reserve(timeout=5)
    cli.delete(job_id)
    assert cli.put("still usable") > 0  # the connection is fine after every error


def test_addresses_come_from_the_environment_when_none_is_given(plain_target, tube, monkeypatch):
    monkeypatch.setenv("BEANRAFT_ADDRESSES", "127.0.0.1:1," + plain_target.address)
    with bc.Client(use=tube, failover_timeout=10) as client:
        assert client.using() == tube
    monkeypatch.delenv("BEANRAFT_ADDRESSES")
    with pytest.raises(ValueError):
        bc.Client()


def test_a_plain_beanstalkd_is_said_once_at_info(plain_target, tube, caplog):
    caplog.set_level(logging.INFO, logger="beanraft.client")
    with bc.Client(plain_target.address, use=tube) as client:
        client.put("x")
        client.delete(client.peek_ready())
    said = [r for r in caplog.records if "failover features are off" in r.getMessage()]
    if plain_target.kind == "beanstalkd":
        assert len(said) == 1 and said[0].levelno == logging.INFO


def test_the_async_client_has_the_whole_api_and_pipelines(plain_target, tube):
    async def scenario():
        async with bc.AsyncClient(plain_target.address, use=tube, watch=tube) as client:
            ids = await asyncio.gather(*(client.put(f"job {i}") for i in range(200)))
            assert len(set(ids)) == 200
            assert (await client.stats_tube(tube))["current-jobs-ready"] == 200
            jobs = [await client.reserve(timeout=1) for _ in range(200)]
            assert sorted(job.id for job in jobs) == sorted(ids)
            await jobs[0].release()
            await jobs[1].bury()
            await jobs[2].touch()
            assert (await jobs[2].stats())["state"] == "reserved"
            await asyncio.gather(*(job.delete() for job in jobs[2:]))
            assert (await client.reserve_job(jobs[0].id)).id == jobs[0].id
            await client.delete(jobs[0].id)
            assert await client.kick(5) == 1
            await client.delete(jobs[1].id)
            with pytest.raises(bc.TimedOutError):
                await client.reserve(timeout=0)
            assert await client.using() == tube and await client.watching() == [tube]
            assert tube in await client.tubes()
            with pytest.raises(bc.NotFoundError):
                await client.peek(jobs[0].id)

    asyncio.run(scenario())


def test_no_node_to_talk_to_raises_unavailable_naming_what_was_tried():
    with pytest.raises(bc.UnavailableError) as caught:
        bc.Client(["127.0.0.1:1", "127.0.0.1:2"], failover_timeout=0.5)
    assert "127.0.0.1:1: connection refused" in str(caught.value)
    assert "127.0.0.1:2: connection refused" in str(caught.value)


def test_a_malformed_put_key_is_refused_before_anything_is_sent(cli):
    for key in ("", "x" * 65, "has space", "ünï"):
        with pytest.raises(ValueError):
            cli.put("k", key=key)
    assert cli.put("k", key="order-17:v1.a_b") > 0


def test_the_async_client_keeps_at_most_max_in_flight_commands_outstanding(plain_target, tube):
    async def scenario():
        async with bc.AsyncClient(plain_target.address, use=tube, max_in_flight=4) as client:
            core, outstanding = client._core, []
            submit = core.submit

            def counting_submit(op, now):
                submit(op, now)
                outstanding.append(len(core.sent) + len(core.pending))

            core.submit = counting_submit
            ids = await asyncio.gather(*(client.put(f"{n}") for n in range(100)))
            assert len(set(ids)) == 100
            assert max(outstanding) == 4  # 100 callers at once, never more than 4 on the wire

    asyncio.run(scenario())


def test_a_worker_blocked_in_reserve_counts_in_current_waiting_as_in_beanstalkd(plain_target, tube):
    """beanstalkd counts a connection blocked in a reserve in ``stats`` and in the ``stats-tube``
    of every tube it watches, until its reply. The same stream of commands gives the same counts
    on BeanRaft, from a plain connection (its wait is in the replicated state) and from one with a
    session id, whose reserve waits on its node without writing to the log; and a ``Client``
    blocked in ``reserve()`` counts as one waiting worker."""
    host, port = plain_target.address.rsplit(":", 1)
    address = (host, int(port))
    other = tube + "-other"

    def counts(observer) -> tuple[int, int, int, int]:
        def waiting(command: bytes) -> int:
            return int(observer.yaml(command)["current-waiting"])
        return (waiting(b"stats"), waiting(b"stats-tube " + tube.encode()),
                waiting(b"stats-tube default"), waiting(b"stats-tube " + other.encode()))

    streams = ["plain"] + (["session", "Client"] if plain_target.kind == "beanraft" else [])
    for stream in streams:
        with LineClient(address, timeout_s=20) as worker, LineClient(address, timeout_s=20) as obs:
            assert obs.request(b"watch " + other.encode()) == b"WATCHING 2"
            assert obs.request(b"use " + tube.encode()) == b"USING " + tube.encode()
            before = counts(obs)
            assert before == (0, 0, 0, 0), stream  # nobody else waits on this server now
            expected = (1, 1, 1, 0)  # watches the tube and default, not the other tube
            if stream == "Client":
                with bc.Client(plain_target.address, watch=tube, failover_timeout=5) as client:
                    client.watch("default")
                    outcome: list = []
                    thread = threading.Thread(
                        target=lambda: outcome.append(client.reserve(timeout=30)), daemon=True)
                    thread.start()
                    wait_for(f"{stream}: a waiting worker in stats", lambda: counts(obs) == expected,
                             timeout_s=15, describe=lambda: str(counts(obs)))
                    job_id = obs.put(b"for the Client")
                    thread.join(timeout=20)
                    assert outcome and outcome[0].id == job_id, outcome
                    client.delete(outcome[0])
            else:
                if stream == "session":
                    assert worker.request(b"session-id").startswith(b"SESSION ")
                assert worker.request(b"watch " + tube.encode()) == b"WATCHING 2"
                worker.send(b"reserve-with-timeout 30\r\n")
                wait_for(f"{stream}: a waiting worker in stats", lambda: counts(obs) == expected,
                         timeout_s=15, describe=lambda: str(counts(obs)))
                job_id = obs.put(b"for the " + stream.encode())
                assert worker.read_job()[0] == job_id
                assert worker.request(b"delete %d" % job_id) == b"DELETED"
            assert counts(obs) == before, stream  # answered: no longer waiting
