"""Commands of the job state machine: opcodes, argument shapes, validation and fixed replies.

A command is a plain tuple ``(op, sid, seq, *args)`` made only of ints, strs and bytes, so the
replication layer can encode it with msgpack and every replica decodes the same value. Lists are
accepted as well as tuples, because msgpack decodes arrays to lists by default.

Validation is a table (``ARGUMENTS``) of argument kinds per opcode plus one small checker per kind.
Anything that does not fit yields an error text; the machine turns it into ``("ERROR", text)``
without touching its state, so no input can make a replica raise.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

SECOND_NS = 1_000_000_000
SAFETY_MARGIN_NS = SECOND_NS  # "deadline soon" starts this long before a TTR deadline (§5)
URGENT_PRI = 1024  # ready jobs with pri below this count as urgent
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_DURATION_NS = MAX_U32 * SECOND_NS  # the protocol's durations are u32 seconds
MAX_NOW_NS = 2**62  # keeps every deadline (now + duration) inside a signed 64-bit integer
REPLY_CACHE_SIZE = 64  # replies remembered per session for exactly-once retries
# The rules versions (machine.py, "Rules versions"): 1 is every log's start; RULES_SUPPORTED is
# the highest this code applies. A new version is added, never an old one changed.
RULES_SUPPORTED = 3
MAX_RULES = 2**16 - 1


class Op(enum.IntEnum):
    """Opcodes of replicated commands; the numbers are part of the log format, never renumber."""

    OPEN = 1
    CLOSE = 2
    PUT = 3
    USE = 4
    WATCH = 5
    IGNORE = 6
    RESERVE = 7
    RESERVE_JOB = 8
    DELETE = 9
    RELEASE = 10
    BURY = 11
    TOUCH = 12
    KICK = 13
    KICK_JOB = 14
    PAUSE_TUBE = 15
    BURN_ID = 16
    TICK = 17
    NODE_START = 18
    DROP_NODE = 19
    # The extensions (extensions.py, docs/reference/extensions.md).
    SESSION_ID = 20
    RESUME = 21
    PUT_KEY = 22
    # The admin extensions (admin.py).
    PURGE_TUBE = 23
    MOVE_JOB = 24
    MOVE_BURIED = 25
    IMPORT_JOB = 26
    # NODE_START that keeps the resumable sessions of the node's previous incarnation for a
    # grace (machine.py); proposed by every node since it was added.
    REGISTER = 27
    # The cluster switches to a rules version (machine.py); proposed by the leader's node once
    # every member applies it.
    RULES = 28
    # The session's client half-closed while it waited in reserve: the wait ends TIMED_OUT and
    # the session goes on (machine.py); rules version 3 and above, an unknown op before.
    END_WAIT = 29


OPS = {int(op): op for op in Op}  # plain int -> Op, cheaper than calling Op(...)

# Commands that belong to the cluster rather than to one session: they ignore sid and seq.
SESSIONLESS = frozenset({Op.TICK, Op.NODE_START, Op.DROP_NODE, Op.REGISTER, Op.RULES})

# Fixed replies, shared so that a cached reply costs nothing extra.
OK = ("OK",)
NOT_IGNORED = ("NOT_IGNORED",)
DEADLINE_SOON = ("DEADLINE_SOON",)
TIMED_OUT = ("TIMED_OUT",)
WAITING = ("WAITING",)
DELETED = ("DELETED",)
RELEASED = ("RELEASED",)
BURIED = ("BURIED",)
TOUCHED = ("TOUCHED",)
KICKED = ("KICKED",)
PAUSED = ("PAUSED",)
NOT_FOUND = ("NOT_FOUND",)
GONE = ("GONE",)
ERROR_WAITING = ("ERROR", "session is waiting in reserve; only CLOSE is accepted")

# The states purge-tube may name: reserved jobs are never purged (admin.py).
PURGE_STATES = ("ready", "delayed", "buried", "all")
# The states import-job may create a job in (extensions.py).
IMPORT_STATES = ("ready", "delayed", "buried")

_TUBE_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()\-]{0,199}")
_PUT_KEY = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SESSION_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")
_NODE_NAME = re.compile(r"[\x21-\x7e]{1,255}")


def is_tube_name(value: object) -> bool:
    """True for a legal tube name: 1..200 name characters, not starting with '-' (§2.3)."""
    return isinstance(value, str) and _TUBE_NAME.fullmatch(value) is not None


def is_node_name(value: object) -> bool:
    """True for a legal node name: 1..255 printable ASCII characters without spaces."""
    return isinstance(value, str) and _NODE_NAME.fullmatch(value) is not None


def _int_in(low: int, high: int) -> Callable[[object], bool]:
    """A checker for an integer in [low, high] (one call per argument: every replica runs it)."""
    def checker(value: object) -> bool:
        # ``type() is int`` rather than isinstance: bools and int subclasses are not numbers.
        return type(value) is int and low <= value <= high
    return checker


_U64 = _int_in(0, MAX_U64)
_NOW = _int_in(0, MAX_NOW_NS)


# The integer argument kinds and their ranges.
_INT_RANGES = {
    "pri": (0, MAX_U32),
    "duration": (0, MAX_DURATION_NS),
    "timeout": (-1, MAX_DURATION_NS),
    "job_id": (0, MAX_U64),
    "bound": (0, MAX_U64),
    "epoch": (1, MAX_U64),
    "count": (0, MAX_U32),
    "rules": (1, MAX_RULES),
}

# One checker per argument kind; each returns True when the value is acceptable.
_KINDS = {
    **{kind: _int_in(low, high) for kind, (low, high) in _INT_RANGES.items()},
    "tube": is_tube_name,
    "body": lambda v: type(v) is bytes,
    "node": is_node_name,
    "key": lambda v: isinstance(v, str) and _PUT_KEY.fullmatch(v) is not None,
    "token": lambda v: isinstance(v, str) and _SESSION_TOKEN.fullmatch(v) is not None,
    "purge_state": lambda v: v in PURGE_STATES,
    "import_state": lambda v: v in IMPORT_STATES,
}

ARGUMENTS: dict[Op, tuple[str, ...]] = {
    Op.OPEN: (),
    Op.CLOSE: (),
    Op.PUT: ("pri", "duration", "duration", "body"),
    Op.USE: ("tube",),
    Op.WATCH: ("tube",),
    Op.IGNORE: ("tube",),
    Op.RESERVE: ("timeout",),
    Op.RESERVE_JOB: ("job_id",),
    Op.DELETE: ("job_id",),
    Op.RELEASE: ("job_id", "pri", "duration"),
    Op.BURY: ("job_id", "pri"),
    Op.TOUCH: ("job_id",),
    Op.KICK: ("bound",),
    Op.KICK_JOB: ("job_id",),
    Op.PAUSE_TUBE: ("tube", "duration"),
    Op.BURN_ID: (),
    Op.TICK: (),
    Op.NODE_START: ("node",),
    Op.DROP_NODE: ("node", "epoch"),
    Op.SESSION_ID: ("token",),
    Op.RESUME: ("token",),
    # key, dedup window and cap (the proposing node's settings), then put's own arguments.
    Op.PUT_KEY: ("key", "duration", "count", "pri", "duration", "duration", "body"),
    Op.PURGE_TUBE: ("tube", "purge_state"),
    Op.MOVE_JOB: ("job_id", "tube"),
    Op.MOVE_BURIED: ("tube", "tube"),
    # key, dedup window and cap (as PUT_KEY), the job's state, then put's own arguments.
    Op.IMPORT_JOB: ("key", "duration", "count", "import_state", "pri", "duration", "duration",
                    "body"),
    Op.REGISTER: ("node", "duration"),  # node, and the grace of its previous sessions
    Op.RULES: ("rules",),
    Op.END_WAIT: (),
}

# Opcode (as a plain int) -> (Op, checkers of its arguments), so checking costs no enum lookup.
_CHECKERS = {int(op): (op, tuple(_KINDS[kind] for kind in kinds))
             for op, kinds in ARGUMENTS.items()}

# The range of the one argument of each opcode that takes a single integer (reserve, delete,
# touch, kick, ...): those commands are checked in one expression (``check``).
_ONE_INT = {int(op): _INT_RANGES[kinds[0]] for op, kinds in ARGUMENTS.items()
            if len(kinds) == 1 and kinds[0] in _INT_RANGES}


_PUT = int(Op.PUT)


def check(command: object, max_job_size: int) -> str | None:
    """Return why ``command`` is malformed, or None when it is a well-formed command."""
    if type(command) is tuple:
        # The most common commands, a put and those of one integer (reserve, delete), are
        # checked in one expression each (the same rules as their ARGUMENTS); one that fails
        # goes on through the table, for the table's answer.
        if len(command) == 7:
            op, sid, seq, pri, delay_ns, ttr_ns, body = command
            if (op == _PUT and type(op) is int and type(sid) is int and 0 <= sid <= MAX_U64
                    and type(seq) is int and 0 <= seq <= MAX_U64
                    and type(pri) is int and 0 <= pri <= MAX_U32
                    and type(delay_ns) is int and 0 <= delay_ns <= MAX_DURATION_NS
                    and type(ttr_ns) is int and 0 <= ttr_ns <= MAX_DURATION_NS
                    and type(body) is bytes and len(body) <= max_job_size):
                return None
        elif len(command) == 4:
            op, sid, seq, arg = command
            bounds = _ONE_INT.get(op) if type(op) is int else None
            if (bounds is not None and type(sid) is int and 0 <= sid <= MAX_U64
                    and type(seq) is int and 0 <= seq <= MAX_U64
                    and type(arg) is int and bounds[0] <= arg <= bounds[1]):
                return None
    return _check_by_table(command, max_job_size)


def _check_by_table(command: object, max_job_size: int) -> str | None:
    """``check`` for every command, through the table ``ARGUMENTS``."""
    if type(command) is not tuple and type(command) is not list:
        return "command must be a tuple (op, sid, seq, *args)"
    if len(command) < 3:
        return "command must be a tuple (op, sid, seq, *args)"
    op = command[0]
    spec = _CHECKERS.get(op) if isinstance(op, int) and type(op) is not bool else None
    if spec is None:
        return "unknown op"
    if not _U64(command[1]) or not _U64(command[2]):
        return "sid and seq must be unsigned 64-bit integers"
    op, checkers = spec
    if len(command) - 3 != len(checkers):
        return f"{op.name} takes {len(checkers)} argument(s)"
    for position, checker in enumerate(checkers):
        if not checker(command[3 + position]):
            return f"{op.name}: argument {position + 1} is not a valid {ARGUMENTS[op][position]}"
    if (op is Op.PUT or op is Op.PUT_KEY or op is Op.IMPORT_JOB) \
            and len(command[-1]) > max_job_size:
        return "JOB_TOO_BIG"
    return None


def is_time(value: object) -> bool:
    """True for an acceptable ``now_ns``: an integer in [0, 2**62]."""
    return _NOW(value)
