"""The log entry codec: what a batch of state-machine commands looks like on disk and on the wire.

One Raft log entry carries one batch (group commit): a time stamp and the commands, each a plain
tuple of ints, strings and bytes (see ``beanraft.jobs.commands``). The first byte is a format
version so a future change can still replay old journals. We never pickle our own classes into
the log: a code change would break replay.

Version 2 (written now): ``b"\\x02"``, the time stamp as 8 bytes (signed, big-endian ns), then
the msgpack list of commands. The stamp has a fixed place so that the leader can overwrite it when
it appends the entry (:func:`stamp_entry`): the proposer's own clock only fills it in until then.
Version 1 (read only): ``b"\\x01"`` then msgpack ``[now_ns, commands]``.
"""

from __future__ import annotations

import struct

import msgpack

ENTRY_VERSION = 2
_STAMP = struct.Struct(">q")
_HEADER = 1 + _STAMP.size


class EntryFormatError(ValueError):
    """An entry that this version of BeanRaft cannot decode."""


def encode_entry(now_ns: int, commands: list[tuple]) -> bytes:
    """Encode one batch with a provisional time stamp ``now_ns`` (ns since the epoch)."""
    return b"".join(encode_entry_parts(now_ns, commands))


def encode_entry_parts(now_ns: int, commands: list[tuple]) -> tuple[bytes, bytes]:
    """:func:`encode_entry` in two parts (header, commands), for a caller that joins them with
    more around them: a big job is then copied once less."""
    return bytes((ENTRY_VERSION,)) + _STAMP.pack(now_ns), msgpack.packb(commands, use_bin_type=True)


def stamp_entry(entry: bytes, now_ns: int) -> bytes:
    """``entry`` with its time stamp replaced by ``now_ns``; the commands are not decoded."""
    if len(entry) < _HEADER or entry[0] != ENTRY_VERSION:
        raise EntryFormatError(f"cannot stamp an entry of version {entry[:1]!r}")
    return entry[:1] + _STAMP.pack(now_ns) + entry[_HEADER:]


def decode_entry(data: bytes) -> tuple[int, list[tuple]]:
    """Decode an entry made by :func:`encode_entry`; raise :class:`EntryFormatError` otherwise."""
    if not data or data[0] not in (1, 2):
        raise EntryFormatError(f"unknown entry version {data[:1]!r}")
    try:
        if data[0] == 2:
            if len(data) < _HEADER:
                raise EntryFormatError("entry shorter than its header")
            now_ns = _STAMP.unpack_from(data, 1)[0]
            # Arrays as tuples, made in C: a command is a flat tuple (no per-command conversion).
            commands = msgpack.unpackb(memoryview(data)[_HEADER:], raw=False, use_list=False)
        else:
            now_ns, commands = msgpack.unpackb(data[1:], raw=False, use_list=False)
    except EntryFormatError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise EntryFormatError(str(exc)) from exc
    if not isinstance(now_ns, int) or not isinstance(commands, tuple):
        raise EntryFormatError("entry is not a time stamp and a list of commands")
    return now_ns, list(commands)
