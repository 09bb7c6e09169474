"""The wire forms of BeanRaft's extension commands, in one place.

``session-id``, ``session-resume <id>`` and ``put-key <key> <pri> <delay> <ttr> <bytes>`` are
new command names: beanstalkd 1.12 answers them with UNKNOWN_COMMAND, which is how the client
knows it talks to plain beanstalkd.
"""

from __future__ import annotations

from typing import Any

from beanraft import protocol as p
from beanraft.protocol.client import put_key_bytes


def session_id() -> Any:
    return p.SessionId()


def session_resume(session: str) -> Any:
    return p.SessionResume(session)


def put_key(key: str, put: bytes) -> bytes:
    """``put-key <key> …`` from the bytes of the plain ``put …`` it replaces."""
    return put_key_bytes(key, put)


def is_session(reply: Any) -> bool:
    return isinstance(reply, p.Session)


def session_of(reply: Any) -> str:
    return reply.session_id


def is_resumed(reply: Any) -> bool:
    return isinstance(reply, p.Resumed)


def resumed_jobs(reply: Any) -> list[int]:
    return list(reply.job_ids)
