"""Goal: ServerConnection is total, split-independent and memory-bounded on any input.

Method: hypothesis generates (1) streams of valid requests, encoded as a client would, and
checks they come back unchanged whether fed whole or cut at random points; (2) streams mixing
valid commands, put headers, long lines, stray CR/LF/NUL and random bytes, and checks that
they only ever yield requests, ``Rejected`` or NEED_DATA -- the same ones however they are
split -- while the unparsed input stays under one line buffer outside a put body; (3) puts
announcing up to 4 GiB over the size limit, and checks that the body is counted, not kept.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from beanraft.protocol import (
    NEED_DATA,
    REQUEST_TYPES,
    Auth,
    Bury,
    Delete,
    Ignore,
    JobTooBig,
    Kick,
    KickJob,
    ListJobs,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    MoveBuried,
    ImportJob,
    MoveJob,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    PurgeTube,
    PutKey,
    Quit,
    Rejected,
    Release,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    ServerConnection,
    SessionId,
    SessionResume,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Watch,
    encode_request,
)

MAX_JOB_SIZE = 300
NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
c_int = st.integers(-(2**31), 2**31 - 1)
tubes = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(NAME_CHARS.replace("-", "")),
    st.text(NAME_CHARS, max_size=199),
)
# Two names or a name and four words must fit in the 224-byte line with the admin commands.
short_tubes = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(NAME_CHARS.replace("-", "")),
    st.text(NAME_CHARS, max_size=99),
)
bodies = st.binary(max_size=MAX_JOB_SIZE)

# One strategy per request type. Quit is left out: it ends the stream, so it only comes last.
STRATEGIES = {
    Put: st.builds(Put, u32, u32, u32, bodies),
    Use: st.builds(Use, tubes),
    Reserve: st.just(Reserve()),
    ReserveWithTimeout: st.builds(ReserveWithTimeout, c_int),
    ReserveJob: st.builds(ReserveJob, u64),
    Delete: st.builds(Delete, u64),
    Release: st.builds(Release, u64, u32, u32),
    Bury: st.builds(Bury, u64, u32),
    Touch: st.builds(Touch, u64),
    Watch: st.builds(Watch, tubes),
    Ignore: st.builds(Ignore, tubes),
    Peek: st.builds(Peek, u64),
    PeekReady: st.just(PeekReady()),
    PeekDelayed: st.just(PeekDelayed()),
    PeekBuried: st.just(PeekBuried()),
    Kick: st.builds(Kick, u32),
    KickJob: st.builds(KickJob, u64),
    StatsJob: st.builds(StatsJob, u64),
    StatsTube: st.builds(StatsTube, tubes),
    Stats: st.just(Stats()),
    ListTubes: st.just(ListTubes()),
    ListTubeUsed: st.just(ListTubeUsed()),
    ListTubesWatched: st.just(ListTubesWatched()),
    PauseTube: st.builds(PauseTube, tubes, u32),
    # The extensions (docs/reference/extensions.md).
    PutKey: st.builds(PutKey, st.text("abcXYZ019_.:-", min_size=1, max_size=64), u32, u32, u32,
                      bodies),
    SessionId: st.just(SessionId()),
    SessionResume: st.builds(SessionResume, st.text("!~aZ09-_", min_size=1, max_size=64)),
    # The admin extensions.
    PurgeTube: st.builds(PurgeTube, tubes, st.sampled_from(["ready", "delayed", "buried", "all"])),
    ListJobs: st.builds(ListJobs, short_tubes,
                        st.sampled_from(["ready", "delayed", "buried", "reserved", "all"]),
                        u32, st.integers(1, 1000)),
    MoveJob: st.builds(MoveJob, u64, short_tubes),
    MoveBuried: st.builds(MoveBuried, short_tubes, short_tubes),
    ImportJob: st.one_of(
        st.builds(ImportJob, st.text("abcXYZ019_.:-", min_size=1, max_size=64),
                  st.sampled_from(["ready", "buried"]), u32, st.just(0), u32, bodies),
        st.builds(ImportJob, st.text("abcXYZ019_.:-", min_size=1, max_size=64),
                  st.just("delayed"), u32, st.integers(1, 2**32 - 1), u32, bodies)),
    # Authentication (docs/reference/auth.md).
    Auth: st.builds(Auth, st.text("aZ09_.@-", min_size=1, max_size=64),
                    st.text("!~aZ09:#", min_size=1, max_size=128)),
}
requests = st.one_of(*STRATEGIES.values())


def test_every_request_type_but_quit_has_a_strategy():
    assert set(STRATEGIES) | {Quit} == set(REQUEST_TYPES)


def events_of(chunks: list[bytes], max_job_size: int = MAX_JOB_SIZE) -> list:
    """Feeds the chunks in order and returns every event, checking the invariants on the way."""
    connection = ServerConnection(max_job_size)
    events = []
    for chunk in chunks:
        connection.receive_data(chunk)
        while (event := connection.next_request()) is not NEED_DATA:
            assert isinstance(event, REQUEST_TYPES + (Rejected,)), event
            events.append(event)
        # Outside a put body, less than one 224-byte line buffer may wait for more input.
        assert connection.in_put_body or connection.buffered_bytes < 224
        assert connection.buffered_bytes < 224 + max_job_size + 2
    return events


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """Splits ``data`` at the given offsets (any order, duplicates allowed)."""
    edges = [0] + sorted(point % (len(data) + 1) for point in points) + [len(data)]
    return [data[start:end] for start, end in zip(edges, edges[1:])]


@given(st.lists(requests, max_size=30), st.booleans(), st.lists(st.integers(0, 2**20)))
def test_encoded_requests_come_back_unchanged_however_the_stream_is_cut(batch, quit_last, points):
    if quit_last:
        batch = batch + [Quit()]
    data = b"".join(encode_request(request) for request in batch)
    assert events_of([data]) == batch
    assert events_of(cut(data, points)) == batch


put_headers = st.builds(
    lambda size, tail: b"put 1 2 3 %d%s\r\n" % (size, tail),
    st.integers(0, MAX_JOB_SIZE + 20),
    st.sampled_from([b"", b"", b" ", b"x"]),
)
fragments = st.one_of(
    st.binary(max_size=40),
    requests.map(encode_request),
    put_headers,
    st.sampled_from(
        [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"quit", b"pause-tube", b"put ", b"use ", b"kick "]
    ),
    st.builds(lambda byte, n: byte * n, st.sampled_from([b"x", b"\r", b" "]), st.integers(0, 300)),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fragments, max_size=30), st.lists(st.integers(0, 2**20), max_size=60))
def test_any_bytes_give_the_same_requests_or_rejections_however_they_are_cut(pieces, points):
    data = b"".join(pieces)
    whole = events_of([data])
    assert events_of(cut(data, points)) == whole
    assert events_of([data[i : i + 1] for i in range(len(data))]) == whole


@given(st.binary(max_size=1000))
def test_random_bytes_fed_one_at_a_time_never_raise(data):
    events_of([data[i : i + 1] for i in range(len(data))])


ZEROS = memoryview(bytes(1 << 20))


def feed_zeros(connection: ServerConnection, count: int) -> None:
    """Feeds ``count`` zero bytes in slices of at most 1 MiB, never allocating them all."""
    while count:
        step = min(count, len(ZEROS))
        connection.receive_data(ZEROS[:step])
        assert connection.buffered_bytes == 0
        count -= step


@settings(deadline=None, max_examples=30)
@given(
    st.integers(0, 65535),
    st.integers(1, 2**32 - 1),
    st.integers(0, 200),
    st.lists(st.integers(0, 2**32), max_size=5),
)
@example(max_job_size=65535, excess=2**32, first=0, points=[])  # the largest size: 2**32 - 1
def test_an_oversized_body_of_up_to_4_gib_is_only_counted(max_job_size, excess, first, points):
    size = min(max_job_size + excess, 2**32 - 1)
    owed = size + 2
    first = min(first, owed - 1)
    connection = ServerConnection(max_job_size)
    connection.receive_data(b"put 0 0 1 %d\r\n" % size + bytes(first))
    assert connection.next_request() is NEED_DATA and connection.buffered_bytes == 0
    # The rest but its last byte arrives cut at random points; the answer must stay pending.
    rest = owed - 1 - first
    edges = sorted({0, rest} | {point % (rest + 1) for point in points})
    for start, end in zip(edges, edges[1:]):
        feed_zeros(connection, end - start)
        assert connection.next_request() is NEED_DATA and not connection.in_put_body
    connection.receive_data(b"\x00use t\r\n")
    assert connection.next_request() == Rejected(JobTooBig(), counted="put")
    assert connection.next_request() == Use("t")
    assert connection.buffered_bytes == 0
