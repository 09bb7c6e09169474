"""The log entry codec: what a batch of state-machine commands looks like on disk and on the wire.

One Raft log entry carries one batch (group commit): the time stamped by the node that proposed it
and the commands, each a plain tuple of ints, strings and bytes (see ``beanraft.jobs.commands``).
The first byte is a format version so a future change can still replay old journals. We never
pickle our own classes into the log: a code change would break replay.
"""

from __future__ import annotations

import msgpack

ENTRY_VERSION = 1


class EntryFormatError(ValueError):
    """An entry that this version of BeanRaft cannot decode."""


def encode_entry(now_ns: int, commands: list[tuple]) -> bytes:
    """Encode one batch: ``now_ns`` (wall-clock ns of the proposer) and its commands."""
    return bytes((ENTRY_VERSION,)) + msgpack.packb([now_ns, commands], use_bin_type=True)


def decode_entry(data: bytes) -> tuple[int, list[tuple]]:
    """Decode an entry made by :func:`encode_entry`; raise :class:`EntryFormatError` otherwise."""
    if not data or data[0] != ENTRY_VERSION:
        raise EntryFormatError(f"unknown entry version {data[:1]!r}")
    try:
        now_ns, commands = msgpack.unpackb(data[1:], raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise EntryFormatError(str(exc)) from exc
    if not isinstance(now_ns, int) or not isinstance(commands, list):
        raise EntryFormatError("entry is not [now_ns, commands]")
    return now_ns, [tuple(c) if isinstance(c, list) else c for c in commands]
