"""The greenstalk client library, unchanged, against every target over TCP and a UNIX socket.

Method: one test per group of greenstalk methods, together calling every public method and raising
every error class a server can cause through its API; a target that greenstalk cannot use is
incompatible whatever its transcripts say.
"""

import signal
import time

import greenstalk
import pytest


@pytest.fixture(params=["tcp", "unix"])
def target(request, start_server, target_kind, server_args):
    return start_server(target_kind, *server_args, unix=request.param == "unix")


@pytest.fixture
def client(target):
    with greenstalk.Client(target.address) as client:
        yield client


def test_put_reserve_and_delete_round_trip_a_text_job(client):
    job_id = client.put("héllo wörld")
    job = client.reserve()
    assert (job.id, job.body) == (job_id, "héllo wörld")
    client.delete(job)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_a_binary_body_survives_byte_for_byte(target):
    body = bytes(range(256)) + b"\r\n\r\n"
    with greenstalk.Client(target.address, encoding=None) as client:
        job_id = client.put(body)
        assert client.reserve(timeout=0).body == body
        assert client.peek(job_id).body == body
        client.delete(job_id)  # an id is accepted as well as a Job


def test_put_passes_priority_delay_and_ttr(client):
    urgent = client.put("urgent", priority=1)
    later = client.put("later", priority=2**32 - 1, delay=100, ttr=7)
    normal = client.put("normal")
    stats = client.stats_job(later)
    assert (stats["pri"], stats["delay"], stats["ttr"], stats["state"]) == (2**32 - 1, 100, 7, "delayed")
    assert client.stats_job(normal)["pri"] == greenstalk.DEFAULT_PRIORITY
    assert client.stats_job(normal)["ttr"] == greenstalk.DEFAULT_TTR
    assert client.reserve().id == urgent
    assert client.reserve().id == normal


def test_reserve_with_a_timeout_raises_timed_out_on_an_empty_tube(client):
    start = time.monotonic()
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=1)
    assert time.monotonic() - start >= 0.9
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)


def test_reserve_job_takes_a_job_by_id_once(client):
    first, second = client.put("a"), client.put("b")
    job = client.reserve_job(second)
    assert (job.id, job.body) == (second, "b")
    with pytest.raises(greenstalk.NotFoundError):
        client.reserve_job(second)
    assert client.reserve().id == first


def test_release_returns_a_job_with_a_new_priority_or_a_delay(client):
    job_id = client.put("r", priority=10)
    job = client.reserve()
    client.release(job, priority=3)
    assert client.stats_job(job_id)["pri"] == 3
    job = client.reserve()
    client.release(job, delay=50)
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["delay"], stats["releases"], stats["pri"]) == (
        "delayed", 50, 2, greenstalk.DEFAULT_PRIORITY)


def test_bury_kick_and_kick_job(client):
    ids = [client.put(str(n)) for n in range(3)]
    for _ in ids:
        client.bury(client.reserve(), priority=9)
    assert client.peek_buried().id == ids[0]
    assert client.stats_tube("default")["current-jobs-buried"] == 3
    assert client.kick(2) == 2
    client.kick_job(ids[2])
    with pytest.raises(greenstalk.NotFoundError):
        client.kick_job(ids[2])
    stats = client.stats_job(ids[2])
    assert (stats["state"], stats["pri"], stats["kicks"], stats["buries"]) == ("ready", 9, 1, 1)
    delayed = client.put("d", delay=100)
    assert client.kick(10) == 1
    assert client.stats_job(delayed)["state"] == "ready"


def test_touch_refreshes_a_reservation_and_needs_one(client):
    client.put("t", ttr=5)
    job = client.reserve()
    time.sleep(1.1)
    client.touch(job)
    assert client.stats_job(job)["time-left"] == 4
    client.release(job)
    with pytest.raises(greenstalk.NotFoundError):
        client.touch(job)


def test_a_second_reserve_while_holding_a_ttr_one_job_raises_deadline_soon(client):
    client.put("soon", ttr=1)
    client.reserve()
    with pytest.raises(greenstalk.DeadlineSoonError):
        client.reserve(timeout=2)


def test_use_watch_ignore_and_the_lists(client):
    assert client.using() == "default"
    client.use("out")
    assert client.using() == "out"
    assert client.watch("in") == 2
    assert client.watching() == ["default", "in"]
    assert client.ignore("default") == 1
    with pytest.raises(greenstalk.NotIgnoredError):
        client.ignore("in")
    assert client.tubes() == ["default", "out", "in"]
    job_id = client.put("x")
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)  # the job went to "out", we watch "in"
    assert client.stats_job(job_id)["tube"] == "out"


def test_the_constructor_uses_and_watches_the_given_tubes(target):
    with greenstalk.Client(target.address, use="jobs", watch=["jobs", "more"]) as client:
        assert client.using() == "jobs"
        assert client.watching() == ["more", "jobs"]  # ignoring default moved the last one first
        job_id = client.put("j")
        assert client.reserve(timeout=0).id == job_id
    with greenstalk.Client(target.address, watch="solo") as client:
        assert client.watching() == ["solo"]


def test_the_peeks_find_jobs_by_id_and_by_state(client):
    ready = client.put("ready", priority=5)
    client.put("later", priority=1, delay=200)
    soon = client.put("soon", delay=100)
    assert client.peek(ready).body == "ready"
    assert client.peek_ready().id == ready
    assert client.peek_delayed().id == soon
    with pytest.raises(greenstalk.NotFoundError):
        client.peek_buried()
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(10_000)


def test_stats_stats_tube_and_stats_job_parse(client):
    job_id = client.put("s")
    stats = client.stats()
    assert stats["current-jobs-ready"] == 1 and stats["total-jobs"] == 1
    assert stats["draining"] == "false"
    assert isinstance(stats["version"], str) and '"' not in stats["version"]
    tube = client.stats_tube("default")
    assert (tube["name"], tube["current-jobs-ready"], tube["total-jobs"]) == ("default", 1, 1)
    job = client.stats_job(job_id)
    assert (job["id"], job["tube"], job["state"]) == (job_id, "default", "ready")
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_tube("absent")


def test_pause_tube_holds_back_jobs_until_unpaused(client):
    job_id = client.put("p")
    client.pause_tube("default", 100)
    assert client.stats_tube("default")["pause"] == 100
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)
    client.pause_tube("default", 0)
    assert client.reserve(timeout=1).id == job_id


def test_a_malformed_tube_name_raises_bad_format(client):
    with pytest.raises(greenstalk.BadFormatError):
        client.use("-bad")
    with pytest.raises(greenstalk.BadFormatError):
        client.watch("a" * 201)
    assert client.using() == "default"


@pytest.mark.server_args("-z", "10")
def test_a_body_over_the_size_limit_raises_job_too_big(client):
    with pytest.raises(greenstalk.JobTooBigError):
        client.put("x" * 11)
    assert client.put("x" * 10) > 0


def test_a_put_in_drain_mode_raises_draining(target, client):
    target.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 3
    while client.stats()["draining"] != "true":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(greenstalk.DrainingError):
        client.put("x")


def test_a_closed_client_releases_its_job_to_another_client(target):
    first = greenstalk.Client(target.address)
    job_id = first.put("held")
    assert first.reserve().id == job_id
    first.close()
    time.sleep(0.2)
    with greenstalk.Client(target.address) as second:
        assert second.reserve(timeout=1).id == job_id
