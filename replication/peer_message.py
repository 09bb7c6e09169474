"""How one peer message becomes the plaintext of its frames, with as few copies of a body as we can.

Theory of operation.
* A message whose pickle fits in one frame is pickled whole (protocol 5), as pysyncobj would.
* A bigger one is *split*: every ``bytes`` object of at least ``OUT_OF_BAND_BYTES`` inside it (a
  job's log entry in an append_entries, a forwarded command) is pickled out of band (pickle
  protocol 5's buffers), so it is never copied into a pickle: the fragments are cut straight
  from the entry the journal already holds. The plaintext of the fragments, concatenated, is::

      u32 buffer count | u64 size of each buffer | u64 size of the pickle | pickle | buffers

  (little-endian). The receiver keeps the fragments as they arrive and copies each buffer once,
  into the ``bytes`` object the message ends up holding; unpickling with ``buffers=`` hands that
  very object back. So a body costs one copy to send a message (none of it whole) and one to
  receive it.
* Only ``bytes`` inside dicts, lists and tuples are lifted, to a depth of four: the shapes of
  pysyncobj's messages.
"""

from __future__ import annotations

import pickle
import struct

PICKLE_PROTOCOL = 5
OUT_OF_BAND_BYTES = 64 * 1024
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")
_MAX_DEPTH = 4


class Outgoing:
    """A split message on its way out: the parts, and how much of them went out."""

    __slots__ = ("parts", "size", "sent", "_part", "_at")

    def __init__(self, parts: list):
        self.parts = [memoryview(p).cast("B") for p in parts]
        self.size = sum(len(p) for p in self.parts)
        self.sent = 0
        self._part = 0
        self._at = 0

    def take(self, limit: int) -> bytes:
        """The next ``limit`` bytes (fewer at the end) as one piece."""
        pieces = []
        want = limit
        while want and self._part < len(self.parts):
            part = self.parts[self._part]
            piece = part[self._at:self._at + want]
            pieces.append(piece)
            want -= len(piece)
            self._at += len(piece)
            if self._at == len(part):
                self._part += 1
                self._at = 0
        piece = pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)
        self.sent += len(piece)
        return piece

    @property
    def done(self) -> bool:
        return self.sent == self.size


def encode(message, whole_limit: int) -> bytes | Outgoing:
    """The pickle of ``message`` if it is at most ``whole_limit`` bytes, else an ``Outgoing``."""
    buffers: list = []
    lifted = _lift(message, 0)
    inband = pickle.dumps(lifted, PICKLE_PROTOCOL, buffer_callback=buffers.append)
    if not buffers and len(inband) <= whole_limit:
        return inband
    raws = [b.raw() for b in buffers]
    head = _COUNT.pack(len(raws)) + b"".join(_SIZE.pack(len(r)) for r in raws)
    return Outgoing([head + _SIZE.pack(len(inband)), inband, *raws])


def decode(pieces: list[bytes]):
    """The message whose split plaintext arrived as ``pieces`` (emptied as they are read)."""
    reader = _Reader(pieces)
    (count,) = _COUNT.unpack(reader.take(_COUNT.size))
    if count > len(pieces) + 1:
        raise ValueError("more buffers than fragments")
    sizes = [_SIZE.unpack(reader.take(_SIZE.size))[0] for _ in range(count)]
    (inband_size,) = _SIZE.unpack(reader.take(_SIZE.size))
    inband = reader.take(inband_size)
    buffers = [reader.take(size) for size in sizes]
    if not reader.at_end:
        raise ValueError("bytes after the last buffer")
    return pickle.loads(inband, buffers=buffers)


def _lift(obj, depth: int):
    """``obj`` with every big enough ``bytes`` inside wrapped for out-of-band pickling."""
    kind = type(obj)
    if kind is bytes:
        return pickle.PickleBuffer(obj) if len(obj) >= OUT_OF_BAND_BYTES else obj
    if depth >= _MAX_DEPTH:
        return obj
    if kind is dict:
        return {key: _lift(value, depth + 1) for key, value in obj.items()}
    if kind is list:
        return [_lift(item, depth + 1) for item in obj]
    if kind is tuple:
        return tuple(_lift(item, depth + 1) for item in obj)
    return obj


class _Reader:
    """Takes exact sizes from a list of fragments, copying each byte once."""

    def __init__(self, pieces: list[bytes]):
        self._pieces = pieces
        self._index = 0
        self._at = 0

    @property
    def at_end(self) -> bool:
        return self._index == len(self._pieces)

    def take(self, size: int) -> bytes:
        parts = []
        want = size
        while want and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            part = memoryview(piece)[self._at:self._at + want]
            parts.append(part)
            want -= len(part)
            self._at += len(part)
            if self._at == len(piece):
                self._index += 1
                self._at = 0
        if want:
            raise ValueError("message shorter than it announced")
        data = parts[0].tobytes() if len(parts) == 1 else b"".join(parts)
        for index in range(self._index):  # let fragments that are fully read go
            self._pieces[index] = b""
        return data
