"""Readers for the arguments of a command line: integers and tube names.

Theory of operation. beanstalkd 1.12 reads numbers with three different C idioms, and clients
can tell them apart, so each one is reproduced here as a pure function over the bytes of one
command line (its CRLF already removed, no NUL inside):

* ``read_number`` is beanstalkd's own reader for job ids, priorities, sizes and durations:
  skip ASCII spaces (only spaces), demand a decimal digit, take the whole digit run, fail if
  the value is out of range. It returns where the digits stopped; ``read_number_strict``
  additionally demands that nothing follows.
* ``read_kick_bound`` is libc ``strtoul`` truncated to a 32-bit ``unsigned int`` (``kick``).
* ``read_c_int_timeout`` is libc ``strtol`` truncated to a 32-bit ``int``
  (``reserve-with-timeout`` in 1.12).

Every failure raises ``FormatError``; the command parser turns it into ``BAD_FORMAT``.
"""

from __future__ import annotations

import re

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1

#: The bytes a tube name may contain (beanstalkd's NAME_CHARS).
NAME_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
)
#: The longest tube name beanstalkd accepts, in bytes.
MAX_TUBE_NAME_LEN = 200

#: The bytes a ``put-key`` key may contain (extension), and its longest length.
KEY_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
MAX_KEY_LEN = 64
_KEY_BYTES = bytes(sorted(KEY_CHARS))
#: The longest session id of ``session-id`` / ``session-resume`` (extension); printable ASCII
#: without spaces.
MAX_SESSION_ID_LEN = 64
_PRINTABLE = frozenset(range(0x21, 0x7F))
#: The bytes of a principal's name (``auth``; no ":", which separates it from the token in an
#: HTTP bearer token) and its longest length; a token is 1..128 printable bytes, no space.
PRINCIPAL_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@-")
MAX_PRINCIPAL_LEN = 64
MAX_TOKEN_LEN = 128

#: The states the admin extensions name (docs/reference/extensions.md): purge-tube takes the
#: first list, list-jobs the second (reserved jobs can be listed, never purged or moved).
PURGE_STATES = ("ready", "delayed", "buried", "all")
LIST_STATES = ("ready", "delayed", "buried", "reserved", "all")
#: The states import-job may create a job in (a reserved job is imported as ready).
IMPORT_STATES = ("ready", "delayed", "buried")
#: The most jobs one list-jobs page may ask for: bounds its reply to about 80 kB.
MAX_LIST_LIMIT = 1000

_DIGITS = frozenset(b"0123456789")
# The characters C's isspace() accepts in the "C" locale; strtol/strtoul skip all of them.
_C_SPACE = frozenset(b" \t\n\v\f\r")


class FormatError(ValueError):
    """An argument is malformed; the command must be answered with BAD_FORMAT."""


# A digit run, and read_number's spaces then digits; ``++`` never gives back a digit, so the run
# is always the whole run, as beanstalkd's strtoull takes it. (One regular expression instead of
# a loop over the bytes: every put header reads four numbers.)
_DIGIT_RUN = re.compile(rb"[0-9]*+")
_SPACES_NUMBER = re.compile(rb" *+([0-9]++)")


def _digit_run(line: bytes, pos: int) -> int:
    """Returns the index just past the run of decimal digits that starts at ``pos``."""
    return _DIGIT_RUN.match(line, pos).end()


def read_number(line: bytes, pos: int, maximum: int) -> tuple[int, int]:
    """Reads an unsigned decimal at ``pos`` the way beanstalkd's read_u64/read_u32 do.

    Returns ``(value, end)`` where ``end`` indexes the first byte after the digits. Leading
    spaces are skipped, but not tabs; a sign is refused because the first byte must be a digit;
    leading zeros are fine. ``maximum`` is U64_MAX for job ids and U32_MAX for the rest.
    """
    found = _SPACES_NUMBER.match(line, pos)
    if found is None:
        raise FormatError("expected a digit")
    value = int(found[1])
    if value > maximum:
        raise FormatError("number out of range")
    return value, found.end()


def read_number_strict(line: bytes, pos: int, maximum: int) -> int:
    """Like ``read_number`` but the number must end the line (a trailing space is an error)."""
    value, end = read_number(line, pos, maximum)
    if end != len(line):
        raise FormatError("trailing bytes after the number")
    return value


def _c_integer(text: bytes) -> tuple[int, bool]:
    """Parses like C ``strtol``/``strtoul`` in base 10, without range checks.

    Returns ``(signed value, converted)``; ``converted`` is False when no digit was found, in
    which case C returns 0 and leaves its end pointer at the start.
    """
    pos = 0
    while pos < len(text) and text[pos] in _C_SPACE:
        pos += 1
    negative = False
    if pos < len(text) and text[pos] in b"+-":
        negative = text[pos] == 0x2D
        pos += 1
    end = _digit_run(text, pos)
    if end == pos:
        return 0, False
    value = int(text[pos:end])
    return (-value if negative else value), True


def read_kick_bound(text: bytes) -> int:
    """Reads ``kick``'s bound: ``strtoul`` then truncation to a C ``unsigned int``.

    Any whitespace and a sign are accepted and trailing garbage is ignored (``5abc`` is 5).
    ``-1`` wraps to 2**64-1 and thus to 4294967295; ``4294967297`` truncates to 1. Only "no
    digits" and magnitudes above 2**64-1 (ERANGE) are errors.
    """
    value, converted = _c_integer(text)
    if not converted:
        raise FormatError("kick needs a number")
    if abs(value) > U64_MAX:
        raise FormatError("kick bound out of range")
    return (value % 2**64) % 2**32


def read_c_int_timeout(text: bytes) -> int:
    """Reads ``reserve-with-timeout``'s seconds as 1.12 does: ``(int) strtol(text)``.

    No digits means 0 (``abc`` and the empty string time out at once), trailing garbage is
    ignored, only values outside a 64-bit ``long`` (ERANGE) are errors. The result is truncated
    to a 32-bit two's-complement ``int``, so 4294967295 becomes -1; a negative result means
    "wait forever" to the caller.
    """
    value, _ = _c_integer(text)
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise FormatError("timeout out of range")
    value &= U32_MAX
    return value - 2**32 if value >= 2**31 else value


def is_decimal(text: str, max_digits: int) -> bool:
    """``text`` is 1..``max_digits`` ASCII digits: what ``int`` takes without surprise (``str``'s
    own ``isdigit`` also takes "²", which ``int`` refuses, and ``int`` refuses thousands of
    digits)."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def is_valid_tube_name(name: bytes) -> bool:
    """True if ``name`` is 1..200 name characters and does not start with ``-``."""
    return (
        0 < len(name) <= MAX_TUBE_NAME_LEN
        and name[0] != 0x2D
        and all(byte in NAME_CHARS for byte in name)
    )


def read_tube_name(name: bytes) -> str:
    """Validates a tube name argument and returns it as text (it is pure ASCII by then)."""
    if not is_valid_tube_name(name):
        raise FormatError("invalid tube name")
    return name.decode("ascii")


def name_run_end(line: bytes, pos: int) -> int:
    """Returns the index just past the run of name characters that starts at ``pos``."""
    end = pos
    while end < len(line) and line[end] in NAME_CHARS:
        end += 1
    return end


def read_put_key(line: bytes) -> tuple[str, int]:
    """Reads a ``put-key`` key at the start of ``line``: up to the first space, 1..64 key bytes.

    Returns ``(key, end)``; ``end`` indexes the space (or the end of the line).
    """
    end = line.find(b" ")
    end = len(line) if end < 0 else end
    key = line[:end]
    # translate() deletes every allowed byte in C: anything left is not a key character.
    if not 0 < len(key) <= MAX_KEY_LEN or key.translate(None, _KEY_BYTES):
        raise FormatError("invalid put-key key")
    return key.decode("ascii"), end


def is_valid_session_id(value: bytes) -> bool:
    """True if ``value`` is 1..64 bytes of printable ASCII without spaces."""
    return 0 < len(value) <= MAX_SESSION_ID_LEN and all(byte in _PRINTABLE for byte in value)


def read_session_id(value: bytes) -> str:
    """Validates the argument of ``session-resume`` (the whole rest of the line)."""
    if not is_valid_session_id(value):
        raise FormatError("invalid session id")
    return value.decode("ascii")


def is_valid_principal(name: bytes) -> bool:
    """True if ``name`` may name a principal: 1..64 bytes of ``PRINCIPAL_CHARS``."""
    return 0 < len(name) <= MAX_PRINCIPAL_LEN and all(byte in PRINCIPAL_CHARS for byte in name)


def read_auth(rest: bytes) -> tuple[str, str]:
    """The principal and the token of an ``auth`` line, separated by exactly one space."""
    principal, token = split_words(rest, 2)
    if not is_valid_principal(principal):
        raise FormatError("invalid principal name")
    if len(token) > MAX_TOKEN_LEN or not all(byte in _PRINTABLE for byte in token):
        raise FormatError("invalid token")
    return principal.decode("ascii"), token.decode("ascii")


def split_words(rest: bytes, count: int) -> list[bytes]:
    """The ``count`` words of an admin extension's arguments, separated by single spaces.

    The admin commands are new, so they are strict: no leading, trailing or doubled space.
    """
    words = rest.split(b" ")
    if len(words) != count or not all(words):
        raise FormatError(f"expected {count} arguments")
    return words


def read_word_number(word: bytes, minimum: int, maximum: int) -> int:
    """A whole word of decimal digits within ``minimum``..``maximum``."""
    if not word or not all(byte in _DIGITS for byte in word) or len(word) > 20:
        raise FormatError("expected a number")
    value = int(word)
    if not minimum <= value <= maximum:
        raise FormatError("number out of range")
    return value


def read_state(word: bytes, states: tuple[str, ...]) -> str:
    """A whole word that must be one of ``states``."""
    text = word.decode("ascii", "replace")
    if text not in states:
        raise FormatError("unknown job state")
    return text
