"""A split peer message comes back equal, its big bodies as plain ``bytes``, however its fragments
are cut; and it never copies a big body into its pickle.

Method: messages shaped like pysyncobj's (an append_entries with many small and a few big
entries, a forwarded command, the per-connection key wrapped around them) go through
``peer_message.encode`` and back through ``decode`` from fragments of several sizes.
"""

from __future__ import annotations

import os

import pytest

from beanraft.replication import peer_message
from beanraft.replication.peer_link import FRAGMENT_BYTES


def fragments(outgoing: peer_message.Outgoing, size: int) -> list[bytes]:
    pieces = []
    while not outgoing.done:
        pieces.append(outgoing.take(size))
    return pieces


BIG = os.urandom(3 * FRAGMENT_BYTES + 17)
MESSAGES = {
    "append_entries": (os.urandom(32), {
        "type": "append_entries", "term": 4, "commit_index": 9, "prevLogIdx": 8, "prevLogTerm": 4,
        "entries": [(b"\x01" + os.urandom(40), 9 + i, 4) for i in range(3)] + [(BIG, 12, 4)]}),
    "apply_command": {"type": "apply_command", "command": BIG, "request_id": 7},
    "many small entries": {"type": "append_entries", "term": 1, "commit_index": 1,
                           "entries": [(os.urandom(100), i, 1) for i in range(2000)]},
}


@pytest.mark.parametrize("name", MESSAGES)
@pytest.mark.parametrize("cut", [1000, FRAGMENT_BYTES])
def test_a_split_message_comes_back_equal_from_fragments_of_any_size(name, cut):
    message = MESSAGES[name]
    encoded = peer_message.encode(message, FRAGMENT_BYTES)
    assert isinstance(encoded, peer_message.Outgoing)
    decoded = peer_message.decode(fragments(encoded, cut))
    assert decoded == message


def test_a_big_body_travels_out_of_band_and_comes_back_as_bytes():
    message = MESSAGES["apply_command"]
    encoded = peer_message.encode(message, FRAGMENT_BYTES)
    inband = bytes(encoded.parts[1])
    assert len(inband) < 200 and BIG[:64] not in inband  # the body is not in the pickle
    assert encoded.parts[2].obj is BIG  # the fragments are cut from the body itself
    decoded = peer_message.decode(fragments(encoded, FRAGMENT_BYTES))
    assert type(decoded["command"]) is bytes and decoded["command"] == BIG


def test_a_small_message_is_one_plain_pickle():
    message = {"type": "next_node_idx", "next_node_idx": 10, "success": True, "reset": False}
    encoded = peer_message.encode(message, FRAGMENT_BYTES)
    assert isinstance(encoded, bytes)


@pytest.mark.parametrize("damage", ["short", "long"])
def test_a_message_that_does_not_add_up_is_refused(damage):
    encoded = peer_message.encode(MESSAGES["apply_command"], FRAGMENT_BYTES)
    pieces = fragments(encoded, FRAGMENT_BYTES)
    pieces = pieces[:-1] if damage == "short" else pieces + [b"x"]
    with pytest.raises(ValueError):
        peer_message.decode(pieces)
