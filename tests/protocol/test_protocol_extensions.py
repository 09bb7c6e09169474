"""Goal: the three extension commands (put-key, session-id, session-resume) parse, frame and
encode exactly as docs/reference/extensions.md says, and leave every 1.12 command untouched.

Method: lines fed whole, byte by byte and split at random points (hypothesis) to a fresh
ServerConnection; their requests or rejections are compared with the documented ones, and
``encode_request`` / ``encode`` are checked byte for byte and round-tripped through the parser.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beanraft.protocol import (
    KEY_CHARS,
    MAX_KEY_LEN,
    MAX_SESSION_ID_LEN,
    BadFormat,
    ExpectedCrlf,
    JobTooBig,
    Put,
    PutKey,
    Rejected,
    Resumed,
    Session,
    SessionId,
    SessionResume,
    UnknownCommand,
    encode,
    encode_request,
    is_valid_session_id,
)

BAD = Rejected(BadFormat())
UNKNOWN = Rejected(UnknownCommand())


@pytest.mark.parametrize("data, expected", [
    (b"put-key k 1 2 3 2\r\nhi\r\n", [PutKey("k", 1, 2, 3, b"hi")]),
    (b"put-key A-z_0.9:x 0 0 0 0\r\n\r\n", [PutKey("A-z_0.9:x", 0, 0, 0, b"")]),
    (b"put-key k 4294967295 4294967295 4294967295 1\r\n\x00\r\n",
     [PutKey("k", 2**32 - 1, 2**32 - 1, 2**32 - 1, b"\x00")]),
    (b"put-key k  1  2  3  1\r\nx\r\n", [PutKey("k", 1, 2, 3, b"x")]),  # put's number rules
    (b"session-id\r\n", [SessionId()]),
    (b"session-resume abc\r\n", [SessionResume("abc")]),
    (b"session-resume !~\"#\r\n", [SessionResume("!~\"#")]),
])
def test_well_formed_extension_lines_become_their_requests(feed, data, expected):
    assert feed(data) == expected


@pytest.mark.parametrize("line", [
    b"put-key  1 2 3 1",           # empty key
    b"put-key k/x 1 2 3 1",        # '/' is not a key character
    b"put-key k\xff 1 2 3 1",
    b"put-key " + b"k" * 65 + b" 1 2 3 1",
    b"put-key k 1 2 3",            # size missing
    b"put-key k 1 2 3 -1",
    b"put-key k 4294967296 0 0 1",
    b"session-resume ",            # empty id
    b"session-resume a b",         # a space inside
    b"session-resume a ",          # a trailing space
    b"session-resume " + b"s" * 65,
    b"session-resume a\tb",
    b"session-id ",                # nothing may follow
    b"session-idx",
])
def test_malformed_extension_lines_are_bad_format(feed, line):
    assert feed(line + b"\r\n")[0] == BAD


@pytest.mark.parametrize("line", [b"put-key", b"session-resume", b"session", b"session-", b"put-ke"])
def test_lines_that_match_no_extension_prefix_are_unknown_commands(feed, line):
    assert feed(line + b"\r\n") == [UNKNOWN]


def test_a_put_key_with_trailing_text_is_bad_format_and_its_body_is_read_as_a_command(feed):
    assert feed(b"put-key k 1 2 3 1 x\r\nA\r\n") == [
        Rejected(BadFormat(), counted="put"), UNKNOWN]


def test_a_put_key_follows_put_framing_for_too_big_and_expected_crlf(feed):
    assert feed(b"put-key k 0 0 1 11\r\n01234567890\r\nput 0 0 1 1\r\nx\r\n",
                max_job_size=10) == [Rejected(JobTooBig(), counted="put"), Put(0, 0, 1, b"x")]
    assert feed(b"put-key k 0 0 1 2\r\nabcd") == [
        Rejected(ExpectedCrlf(), counted="put", producer=True, burns_id=True)]


def test_the_longest_key_and_session_id_are_accepted(feed):
    key, sid = "k" * MAX_KEY_LEN, "s" * MAX_SESSION_ID_LEN
    assert feed(encode_request(PutKey(key, 0, 0, 1, b"x"))) == [PutKey(key, 0, 0, 1, b"x")]
    assert feed(encode_request(SessionResume(sid))) == [SessionResume(sid)]


def test_extension_requests_encode_as_the_documented_wire():
    assert encode_request(PutKey("k1", 5, 6, 7, b"ab")) == b"put-key k1 5 6 7 2\r\nab\r\n"
    assert encode_request(SessionId()) == b"session-id\r\n"
    assert encode_request(SessionResume("xyz")) == b"session-resume xyz\r\n"


def test_extension_replies_encode_as_the_documented_wire():
    assert encode(Session("a-B_9")) == b"SESSION a-B_9\r\n"
    assert encode(Resumed((5, 7))) == b"RESUMED 12\r\n---\n- 5\n- 7\n\r\n"
    assert encode(Resumed(())) == b"RESUMED 4\r\n---\n\r\n"


def test_session_ids_are_printable_ascii_without_spaces_and_at_most_64_bytes():
    assert is_valid_session_id(b"!" + b"~" * 63)
    assert not is_valid_session_id(b"")
    assert not is_valid_session_id(b"a b")
    assert not is_valid_session_id(b"a" * 65)
    assert not is_valid_session_id(b"\x7f")


keys = st.text(alphabet=sorted(chr(b) for b in KEY_CHARS), min_size=1, max_size=MAX_KEY_LEN)
session_ids = st.binary(min_size=1, max_size=MAX_SESSION_ID_LEN).filter(is_valid_session_id) | \
    st.text(alphabet=[chr(b) for b in range(0x21, 0x7F)], min_size=1,
            max_size=MAX_SESSION_ID_LEN).map(str.encode)
requests = st.one_of(
    st.builds(PutKey, keys, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1), st.binary(max_size=40)),
    st.just(SessionId()),
    session_ids.map(lambda raw: SessionResume(raw.decode("ascii"))),
    st.builds(Put, st.integers(0, 9), st.integers(0, 9), st.integers(0, 9), st.binary(max_size=9)),
)


@given(st.lists(requests, min_size=1, max_size=8), st.data())
def test_any_extension_requests_round_trip_whatever_the_split(feed, sequence, data):
    wire = b"".join(encode_request(request) for request in sequence)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    chunks = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
    assert feed(*chunks) == sequence
    assert feed(*[bytes([byte]) for byte in wire]) == sequence
