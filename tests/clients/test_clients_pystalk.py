"""The pystalk client library (EasyPost), unchanged, against every target over TCP.

Method: one test per group of pystalk methods, together calling every public method of
BeanstalkClient and ProductionPool. pystalk speaks TCP only (host and port), reports server errors
as BeanstalkError(message) and parses YAML with PyYAML.
"""

import time

import pytest
from pystalk import BeanstalkClient, BeanstalkConnectionError, BeanstalkError, ProductionPool


@pytest.fixture
def client(server):
    host, port = server.address
    client = BeanstalkClient(host, port, socket_timeout=10)
    yield client
    client.close()


def error_of(call) -> str:
    with pytest.raises(BeanstalkError) as info:
        call()
    return info.value.message


def test_put_reserve_and_delete_round_trip(client):
    status, job_id = client.put_job("hello", pri=5, delay=0, ttr=30)
    assert status == b"INSERTED"
    job = client.reserve_job(1)
    assert (job.job_id, job.job_data) == (job_id, b"hello")
    client.delete_job(job)
    assert error_of(lambda: client.delete_job(job_id)) == "NOT_FOUND"


def test_auto_decode_returns_text_bodies(server):
    host, port = server.address
    client = BeanstalkClient(host, port, auto_decode=True)
    client.put_job("grüße".encode())
    assert client.reserve_job(0).job_data == "grüße"
    client.close()


def test_put_job_passes_priority_delay_and_ttr(client):
    _, job_id = client.put_job(b"x", pri=2**32 - 1, delay=100, ttr=9)
    stats = client.stats_job(job_id)
    assert (stats["pri"], stats["delay"], stats["ttr"], stats["state"]) == (2**32 - 1, 100, 9, "delayed")
    _, default_id = client.put_job(b"y")
    stats = client.stats_job(default_id)
    assert (stats["pri"], stats["ttr"]) == (65536, 120)


def test_reserve_job_times_out_on_an_empty_tube(client):
    start = time.monotonic()
    assert error_of(lambda: client.reserve_job(1)) == "TIMED_OUT"
    assert time.monotonic() - start >= 0.9
    assert list(client.reserve_iter()) == []


def test_reserve_iter_takes_every_ready_job_in_priority_order(client):
    for pri, body in ((3, b"c"), (1, b"a"), (2, b"b")):
        client.put_job(body, pri=pri)
    assert [job.job_data for job in client.reserve_iter()] == [b"a", b"b", b"c"]


def test_put_job_into_and_the_using_context_choose_the_tube(client):
    _, first = client.put_job_into("into", b"1")
    with client.using("ctx") as inserter:
        _, second = inserter.put_job(b"2", pri=7)
    assert client.current_tube == "default"
    assert client.stats_job(first)["tube"] == "into"
    assert (client.stats_job(second)["tube"], client.stats_job(second)["pri"]) == ("ctx", 7)
    client.use("direct")
    _, third = client.put_job(b"3")
    assert client.stats_job(third)["tube"] == "direct"
    assert client.list_tubes() == ["default", "into", "ctx", "direct"]


def test_watch_ignore_and_the_watchlist_setter(client):
    client.put_job_into("w1", b"one")
    client.put_job_into("w2", b"two")
    client.watch("w1")  # the first watch drops "default"
    assert client.watchlist == {"w1"}
    assert client.reserve_job(0).job_data == b"one"
    client.watchlist = ["w2"]
    assert client.watchlist == {"w2"}
    assert client.reserve_job(0).job_data == b"two"
    client.watch("w1")
    client.ignore("w1")
    assert client.watchlist == {"w2"}


def test_the_peeks_and_their_iterators(client):
    _, ready = client.put_job(b"r", pri=1)
    _, delayed = client.put_job(b"d", delay=100)
    assert client.peek_ready().job_id == ready
    assert client.peek_delayed().job_id == delayed
    assert error_of(client.peek_buried) == "NOT_FOUND"
    # The iterators peek again and again until NOT_FOUND, so they are meant to be consumed
    # along with deletes; the first item is the peek itself.
    assert next(client.peek_ready_iter()).job_id == ready
    assert next(client.peek_delayed_iter()).job_id == delayed
    assert list(client.peek_buried_iter()) == []


def test_bury_kick_and_release(client):
    _, first = client.put_job(b"1")
    _, second = client.put_job(b"2")
    for _ in range(2):
        assert client.bury_job(client.reserve_job(0), pri=4) == b"BURIED"
    assert client.peek_buried().job_id == first
    assert client.kick_jobs(1) == (b"KICKED", 1)
    client.kick_job(second)
    assert error_of(lambda: client.kick_job(second)) == "NOT_FOUND"
    job = client.reserve_job(0)
    assert client.release_job(job, pri=8, delay=100) == b"RELEASED"
    stats = client.stats_job(job)
    assert (stats["state"], stats["pri"], stats["delay"], stats["buries"]) == ("delayed", 8, 100, 1)


def test_stats_stats_tube_and_list_tubes(client):
    client.put_job(b"s")
    stats = client.stats()
    assert stats["current-jobs-ready"] == 1 and stats["total-jobs"] == 1
    assert stats["draining"] is False  # YAML boolean
    assert str(stats["version"])  # "1.12" parses as a string, not a float
    assert client.stats_tube("default")["current-jobs-ready"] == 1
    assert client.list_tubes() == ["default"]
    assert error_of(lambda: client.stats_tube("absent")) == "NOT_FOUND"


def test_pause_and_unpause_tube(client):
    client.put_job(b"p")
    assert client.pause_tube("default", 100) == b"PAUSED"
    assert client.stats_tube("default")["pause"] == 100
    assert error_of(lambda: client.reserve_job(0)) == "TIMED_OUT"
    assert client.unpause_tube("default") == b"PAUSED"
    assert client.reserve_job(1).job_data == b"p"


def test_close_reconnects_with_the_same_use_and_watch(client):
    client.use("kept")
    client.watch("kept")
    client.close()
    _, job_id = client.put_job(b"k")  # reconnects lazily
    assert client.stats_job(job_id)["tube"] == "kept"
    assert client.reserve_job(0).job_id == job_id


def test_from_uri_and_ping(server):
    host, port = server.address
    client = BeanstalkClient.from_uri(f"beanstalk://{host}:{port}")
    assert client.ping() is True
    assert client.list_tubes() == ["default"]
    client.close()


def test_a_production_pool_skips_a_dead_server(server, unused_port):
    host, port = server.address
    dead = BeanstalkClient(host, unused_port, socket_timeout=2)
    live = BeanstalkClient(host, port, socket_timeout=2)
    pool = ProductionPool([dead, live], round_robin=False, initial_shuffle=False)
    pool.use("pooled")
    _, job_id = pool.put_job(b"p1")
    _, second_id = pool.put_job_into("other", b"p2")
    assert live.stats_job(job_id)["tube"] == "pooled"
    assert live.stats_job(second_id)["tube"] == "other"
    with pytest.raises(BeanstalkConnectionError):
        dead.ping()
    uri_pool = ProductionPool.from_uris([f"beanstalk://{host}:{port}"], socket_timeout=2)
    _, third_id = uri_pool.put_job(b"p3")
    assert third_id > second_id
