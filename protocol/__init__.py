"""beanraft.protocol: a sans-I/O codec of the beanstalkd 1.12 text protocol.

Feed a ``ServerConnection`` the bytes a client sends, take requests (frozen dataclasses named
after the commands, e.g. ``Put``, ``ReserveWithTimeout``) or ``Rejected`` answers from
``next_request()`` until it returns ``NEED_DATA``, and turn replies (``Inserted``,
``DeadlineSoon``, ...) into bytes with ``send()``. No sockets, no clock, standard library only.
BeanRaft's three extensions (``PutKey``, ``SessionId``, ``SessionResume``; replies ``Session``,
``Resumed``) and its four admin commands (``PurgeTube``, ``ListJobs``, ``MoveJob``,
``MoveBuried``; replies ``Purged``, ``Moved``) are documented in docs/reference/extensions.md.
"""

from .connection import DEFAULT_MAX_JOB_SIZE, LINE_BUF_SIZE, MAX_JOB_SIZE_LIMIT, NEED_DATA, ServerConnection
from .fields import (
    KEY_CHARS,
    LIST_STATES,
    MAX_KEY_LEN,
    MAX_LIST_LIMIT,
    MAX_SESSION_ID_LEN,
    PURGE_STATES,
    is_valid_session_id,
)
from .replies import (
    REPLY_TYPES,
    LIST_JOBS_KEYS,
    STATS_JOB_KEYS,
    STATS_KEYS,
    STATS_TUBE_KEYS,
    BadFormat,
    Buried,
    DeadlineSoon,
    Deleted,
    Draining,
    ExpectedCrlf,
    Found,
    Inserted,
    InternalError,
    JobTooBig,
    Kicked,
    NotFound,
    NotIgnored,
    Ok,
    OutOfMemory,
    Paused,
    Released,
    Reply,
    Reserved,
    Moved,
    Purged,
    Resumed,
    Session,
    TimedOut,
    Touched,
    UnknownCommand,
    Using,
    Watching,
    encode,
    yaml_list,
    yaml_records,
    yaml_mapping,
)
from .requests import (
    REQUEST_TYPES,
    Bury,
    Delete,
    Ignore,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    PutKey,
    Quit,
    Rejected,
    Release,
    Request,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    SessionId,
    SessionResume,
    PurgeTube,
    ListJobs,
    MoveJob,
    MoveBuried,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Watch,
    encode_request,
)

__all__ = [
    # connection
    "ServerConnection", "NEED_DATA", "LINE_BUF_SIZE", "MAX_JOB_SIZE_LIMIT", "DEFAULT_MAX_JOB_SIZE",
    "KEY_CHARS", "MAX_KEY_LEN", "MAX_SESSION_ID_LEN", "is_valid_session_id",
    # requests
    "Request", "REQUEST_TYPES", "Rejected", "encode_request",
    "Put", "Use", "Reserve", "ReserveWithTimeout", "ReserveJob", "Delete", "Release", "Bury",
    "Touch", "Watch", "Ignore", "Peek", "PeekReady", "PeekDelayed", "PeekBuried", "Kick",
    "KickJob", "StatsJob", "StatsTube", "Stats", "ListTubes", "ListTubeUsed",
    "ListTubesWatched", "PauseTube", "Quit",
    # requests of the extensions (docs/reference/extensions.md)
    "PutKey", "SessionId", "SessionResume",
    # replies
    "Reply", "REPLY_TYPES", "encode",
    "Inserted", "Buried", "Using", "Reserved", "DeadlineSoon", "TimedOut", "Deleted",
    "NotFound", "Released", "Touched", "Watching", "NotIgnored", "Found", "Kicked", "Paused",
    "Ok", "BadFormat", "UnknownCommand", "ExpectedCrlf", "JobTooBig", "OutOfMemory",
    "InternalError", "Draining",
    # replies of the extensions
    "Session", "Resumed",
    # the admin extensions' requests and replies
    "PurgeTube", "ListJobs", "MoveJob", "MoveBuried", "Purged", "Moved",
    "PURGE_STATES", "LIST_STATES", "MAX_LIST_LIMIT",
    # YAML
    "yaml_mapping", "yaml_list", "yaml_records", "LIST_JOBS_KEYS", "STATS_JOB_KEYS",
    "STATS_TUBE_KEYS", "STATS_KEYS",
]
