"""beanraft.client: a beanstalkd client for BeanRaft clusters that rides through failover.

``Client`` (blocking) and ``AsyncClient`` (asyncio) have greenstalk 2.x's methods and
exceptions, so switching from greenstalk is an import change. Give them every node's address:
when a node dies, freezes or cannot serve, the client moves to another one, resumes its
session (its reserved jobs stay its own) and replays what was in flight without creating a
duplicate job. Against plain beanstalkd 1.12 it is an ordinary single-server client.
"""

from .addresses import ENV_VAR
from .aio import AsyncClient
from .api import Job
from .blocking import Client
from .errors import (
    BadFormatError,
    BeanstalkdError,
    BuriedError,
    DeadlineSoonError,
    DrainingError,
    Error,
    ExpectedCrlfError,
    InternalError,
    JobTooBigError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    PermissionDeniedError,
    TimedOutError,
    NotBeanRaftError,
    UnavailableError,
    UnknownCommandError,
    UnknownResponseError,
)
from .ops import DEFAULT_DELAY, DEFAULT_PRIORITY, DEFAULT_TTR, DEFAULT_TUBE

__all__ = [
    "Client", "AsyncClient", "Job", "ENV_VAR",
    "DEFAULT_TUBE", "DEFAULT_PRIORITY", "DEFAULT_DELAY", "DEFAULT_TTR",
    "Error", "BeanstalkdError", "UnknownResponseError", "UnavailableError",
    "BadFormatError", "BuriedError", "DeadlineSoonError", "DrainingError", "ExpectedCrlfError",
    "InternalError", "JobTooBigError", "NotFoundError", "NotIgnoredError", "OutOfMemoryError",
    "TimedOutError", "UnknownCommandError", "NotBeanRaftError", "PermissionDeniedError",
]
