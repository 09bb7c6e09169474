"""pysyncobj's log entries as bytes: where our batch lies inside one, and the leader's stamp on it.

pysyncobj appends a type byte and, for a call of a ``@replicated`` method, the pickled
(method id, args). Ours has a single bytes argument: the encoded batch (``codec.py``). The leader
re-stamps that batch with the cluster's time as it appends the entry (``glue.py``).
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Callable

from beanraft.jobs.commands import Op

from . import seam
from .codec import stamp_entry
from .disk import jobs_cost

# pysyncobj's log entries are a type byte and, for a call of a @replicated method, the pickled
# (method id, args). Ours has a single bytes argument: the encoded batch.
_REGULAR = seam.REGULAR_COMMAND
_PICKLE_PROTOCOL = seam.PICKLE_PROTOCOL


class _PlainData(pickle.Unpickler):
    """Unpickles tuples, ints and bytes only.

    Protocol 2 writes bytes as a call of ``_codecs.encode``: the one global it may look up.
    """

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise pickle.UnpicklingError(f"{module}.{name} in a log entry")


_ENTRY_HEAD = 9  # version byte and time stamp of an encoded batch (codec.py)
_MEMO, _TUPLE1, _TUPLE2, _STOP, _FRAME = b"\x94", b"\x85", b"\x86", b".", b"\x95"
_INTS = {b"K": 1, b"M": 2, b"J": 4}  # BININT1, BININT2, BININT
_BYTES = {b"C": 1, b"B": 4, b"\x8e": 8}  # SHORT_BINBYTES, BINBYTES, BINBYTES8
_CALL_TAIL = _MEMO + _TUPLE1 + _MEMO + _TUPLE2 + _MEMO + _STOP


def _single_bytes_argument(command: bytes) -> tuple[int, int, int] | None:
    """(method id, start, end) of the batch in ``command`` if that is a protocol 4/5 pickle of
    (int, (bytes,)).

    That is the exact opcode sequence ``pickle.dumps((method, (entry,)), 5)`` writes; anything
    else gives None and is unpickled instead. Reading the opcodes spares two copies of a job body.
    """
    at = 1
    if command[at:at + 1] != b"\x80" or command[at + 1] not in (4, 5):
        return None
    at += 2
    if command[at:at + 1] == _FRAME:
        at += 9
    width = _INTS.get(command[at:at + 1])
    if width is None:
        return None
    method = int.from_bytes(command[at + 1:at + 1 + width], "little", signed=width == 4)
    at += 1 + width
    width = _BYTES.get(command[at:at + 1])
    if width is None:
        return None
    size = int.from_bytes(command[at + 1:at + 1 + width], "little")
    start = at + 1 + width
    end = start + size
    tail = command[end:end + 9 + len(_CALL_TAIL)]
    if tail[:1] == _FRAME:
        tail = tail[9:]
    if tail != _CALL_TAIL or size < _ENTRY_HEAD:
        return None
    return method, start, end


def batch_view(command: bytes, method: int) -> memoryview | None:
    """The batch inside ``command`` if it is a call of ``method`` in the usual shape, else None."""
    if command[:1] != _REGULAR:
        return None
    span = _single_bytes_argument(command)
    if span is None or span[0] != method:
        return None
    return memoryview(command)[span[1]:span[2]]


def call_command(method: int, parts: tuple[bytes, ...]) -> bytes:
    """pysyncobj's command for ``method(b"".join(parts))``, built in one copy.

    The pickle is what ``pickle.dumps((method, (entry,)), 5)`` means (any unpickler reads it) in
    the exact shape ``_single_bytes_argument`` recognises.
    """
    size = sum(len(part) for part in parts)
    assert 0 <= method < 256, method
    return b"".join((_REGULAR, b"\x80\x05K", bytes((method,)), b"\x8e", size.to_bytes(8, "little"),
                     *parts, _CALL_TAIL))


def restamp_command(command: bytes, stamp: Callable[[], int]) -> bytes:
    """The pysyncobj command ``command`` with our batch inside re-stamped with ``stamp()``.

    Commands of other types (pysyncobj's no-op and membership entries) come back unchanged.
    Raises ``pickle.UnpicklingError``, ``EntryFormatError`` or ``ValueError`` on anything else.
    """
    if command[:1] != _REGULAR:
        return command
    span = _single_bytes_argument(command)
    if span is not None:  # the usual shape: patch the stamp in place, one copy of the command
        _method, start, end = span
        view = memoryview(command)
        entry_head = bytes(view[start:start + _ENTRY_HEAD])
        stamped = stamp_entry(entry_head, stamp())
        return b"".join((view[:start], stamped, view[start + _ENTRY_HEAD:]))
    call = _PlainData(io.BytesIO(command[1:])).load()
    if not (isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], tuple)
            and len(call[1]) == 1 and isinstance(call[1][0], bytes)):
        raise ValueError("not a call with one bytes argument")
    method, (entry,) = call
    return _REGULAR + pickle.dumps((method, (stamp_entry(entry, stamp()),)), _PICKLE_PROTOCOL)


_PUT = int(Op.PUT)


def put_cost(commands) -> int:
    """The disk cost (``disk.jobs_cost``) of the well-formed puts among ``commands``."""
    count = size = 0
    for c in commands:  # once per applied batch: a loop, not a sum over a generator
        if isinstance(c, (list, tuple)) and len(c) == 7 and c[0] == _PUT:
            body = c[6]
            if isinstance(body, bytes):
                count += 1
                size += len(body)
    return jobs_cost(count, size)
