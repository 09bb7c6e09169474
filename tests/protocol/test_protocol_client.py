"""Goal: ClientConnection turns a server's byte stream into the replies beanstalkd 1.12 sends,
however TCP split it, and refuses garbage with ProtocolError only.

Method: a stream of every reply shape (encoded with the server side's own ``encode``, so both
directions agree) is fed whole, byte by byte and split at random points; the same replies must
come out. Hypothesis feeds arbitrary bytes, which must yield replies or ProtocolError.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beanraft import protocol as p
from beanraft.protocol.client import MAX_REPLY_LINE, ClientConnection, ProtocolError

REPLIES = [
    p.Inserted(7), p.Buried(), p.Buried(9), p.Using("default"), p.Using("a" * 200),
    p.Reserved(3, b"hello"), p.Reserved(4, b""), p.Reserved(5, b"with\r\ncrlf inside\r\n"),
    p.Found(18446744073709551615, b"\x00\xff"), p.Watching(2), p.Kicked(), p.Kicked(12),
    p.Ok(p.yaml_list(["default", "t"])), p.Ok(p.yaml_mapping([("id", 1), ("tube", "x")])),
    p.DeadlineSoon(), p.TimedOut(), p.Deleted(), p.NotFound(), p.Released(), p.Touched(),
    p.NotIgnored(), p.Paused(), p.BadFormat(), p.UnknownCommand(), p.ExpectedCrlf(),
    p.JobTooBig(), p.OutOfMemory(), p.InternalError(), p.Draining(),
    # the extensions
    p.Session("1a2b:c3"), p.Resumed(()), p.Resumed((5, 18446744073709551615)),
    # the admin extensions
    p.Purged(0), p.Purged(4294967296), p.Moved(1), p.Exists(7),
    p.Ok(p.yaml_records([[("id", 5), ("state", "ready"), ("pri", 0), ("age", 1), ("size", 3)]])),
]
STREAM = b"".join(p.encode(reply) for reply in REPLIES)


def feed(*chunks: bytes) -> list:
    connection = ClientConnection()
    out = []
    for chunk in chunks:
        connection.receive_data(chunk)
        while (reply := connection.next_reply()) is not p.NEED_DATA:
            out.append(reply)
    assert connection.buffered_bytes == 0
    return out


def test_every_reply_shape_comes_out_of_the_whole_stream():
    assert feed(STREAM) == REPLIES


def test_the_same_replies_come_out_when_fed_byte_by_byte():
    assert feed(*(STREAM[i:i + 1] for i in range(len(STREAM)))) == REPLIES


@pytest.mark.parametrize("seed", range(20))
def test_the_same_replies_come_out_when_split_at_random_points(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM)), 30))
    chunks = [STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(STREAM)])]
    assert feed(*chunks) == REPLIES


@pytest.mark.parametrize("request_", [
    p.Put(0, 0, 0, b""), p.Put(4294967295, 7, 9, b"x\r\ny"), p.PutKey("a-b.c:d_1", 1, 2, 3, b"z"),
    p.Reserve(), p.ReserveWithTimeout(0), p.ReserveWithTimeout(-1), p.Delete(18446744073709551615),
    p.Touch(3), p.Release(1, 2, 3), p.Bury(4, 5),
])
def test_the_fast_encodings_write_the_same_bytes_as_encode_request(request_):
    assert ClientConnection().send(request_) == p.encode_request(request_)


def test_requests_are_encoded_as_a_client_sends_them():
    connection = ClientConnection()
    assert connection.send(p.Put(1, 2, 3, b"ab")) == b"put 1 2 3 2\r\nab\r\n"
    assert connection.send(p.ReserveWithTimeout(5)) == b"reserve-with-timeout 5\r\n"
    assert connection.send(p.Release(1, 2, 3)) == b"release 1 2 3\r\n"
    assert connection.send(p.PutKey("k:1", 1, 2, 3, b"ab")) == b"put-key k:1 1 2 3 2\r\nab\r\n"
    assert connection.send(p.SessionResume("s1")) == b"session-resume s1\r\n"
    assert connection.send(p.SessionId()) == b"session-id\r\n"


@pytest.mark.parametrize("garbage", [
    b"HELLO\r\n", b"INSERTED\r\n", b"INSERTED x\r\n", b"INSERTED 1 2\r\n", b"RESERVED 1\r\n",
    b"OK -1\r\n", b"SESSION\r\n", b"SESSION a b\r\n", b"RESUMED 6\r\n---\nx\n\r\n",
    b"RESUMED 8\r\n---\n- x\n\r\n", b"DELETED 3\r\n", b"FOUND 1 3\r\nabcXY", b"INSERTED 99999999999999999999\r\n",
])
def test_garbage_is_a_protocol_error(garbage):
    connection = ClientConnection()
    connection.receive_data(garbage)
    with pytest.raises(ProtocolError):
        while connection.next_reply() is not p.NEED_DATA:
            pass


def test_a_reply_line_longer_than_the_bound_is_refused_before_its_end_arrives():
    connection = ClientConnection()
    connection.receive_data(b"U" * (MAX_REPLY_LINE + 1))
    assert connection.next_reply() is p.NEED_DATA  # could still end in CRLF
    connection.receive_data(b"U")
    with pytest.raises(ProtocolError):
        connection.next_reply()


def test_a_body_larger_than_the_bound_is_refused_from_its_header():
    connection = ClientConnection(max_body_size=10)
    connection.receive_data(b"RESERVED 1 11\r\n")
    with pytest.raises(ProtocolError):
        connection.next_reply()
    ok = ClientConnection(max_body_size=10)
    ok.receive_data(b"RESERVED 1 10\r\n0123456789\r\n")
    assert ok.next_reply() == p.Reserved(1, b"0123456789")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_arbitrary_bytes_give_replies_or_a_protocol_error_never_another_exception(chunks):
    connection = ClientConnection(max_body_size=64)
    try:
        for chunk in chunks:
            connection.receive_data(chunk)
            while connection.next_reply() is not p.NEED_DATA:
                pass
    except ProtocolError:
        pass


def outcome(connection: ClientConnection, chunks) -> list:
    """The replies, then the ProtocolError's type if one came, of ``chunks`` fed in turn."""
    out: list = []
    try:
        for chunk in chunks:
            connection.receive_data(chunk)
            while (reply := connection.next_reply()) is not p.NEED_DATA:
                out.append(reply)
    except ProtocolError:
        out.append(ProtocolError)
    return out


class GeneralOnly(ClientConnection):
    """The parser without its one-expression path for the frequent replies."""

    def _hot_reply(self, hot):
        return None


HOT_EDGES = [
    b"INSERTED 18446744073709551615\r\n", b"INSERTED 18446744073709551616\r\n",
    b"INSERTED 007\r\n", b"RESERVED 18446744073709551616 1\r\nx\r\n", b"RESERVED 1 65\r\n",
    b"RESERVED 2 64\r\n" + b"y" * 64 + b"\r\n", b"RESERVED 3 2\r\nabXY", b"DELETED\r\n",
    b"TIMED_OUT\r\n", b"DEADLINE_SOON\r\n", b"NOT_FOUND\r\n", b"RELEASED\r\nTOUCHED\r\n",
]


@pytest.mark.parametrize("stream", HOT_EDGES + [STREAM])
def test_the_hot_path_reads_what_the_general_path_reads(stream):
    for cut in range(len(stream) + 1):
        chunks = [stream[:cut], stream[cut:]]
        assert (outcome(ClientConnection(max_body_size=64), chunks)
                == outcome(GeneralOnly(max_body_size=64), chunks)), (stream, cut)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HOT_EDGES) | st.binary(max_size=30), max_size=6))
def test_the_hot_path_agrees_with_the_general_path_on_arbitrary_bytes(chunks):
    assert (outcome(ClientConnection(max_body_size=64), chunks)
            == outcome(GeneralOnly(max_body_size=64), chunks))
