"""The wire forms of BeanRaft's extension commands, in one place.

``session-id``, ``session-resume <id>`` and ``put-key <key> <pri> <delay> <ttr> <bytes>`` are
new command names: beanstalkd 1.12 answers them with UNKNOWN_COMMAND, which is how the client
knows it talks to plain beanstalkd.
"""

from __future__ import annotations

from typing import Any

from beanraft import protocol as p
from beanraft.protocol import client as pc


def session_id() -> Any:
    return pc.SessionId()


def session_resume(session: str) -> Any:
    return pc.SessionResume(session)


def put_key(key: str, put: p.Put) -> Any:
    return pc.PutKey(key, put.pri, put.delay_s, put.ttr_s, put.body)


def is_session(reply: Any) -> bool:
    return isinstance(reply, pc.Session)


def session_of(reply: Any) -> str:
    return reply.session_id


def is_resumed(reply: Any) -> bool:
    return isinstance(reply, pc.Resumed)


def resumed_jobs(reply: Any) -> list[int]:
    return [int(line) for line in pc.parse_yaml_list(reply.data)]
