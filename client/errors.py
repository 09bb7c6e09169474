"""The exceptions of ``beanraft.client``: greenstalk 2.x's names, plus ``UnavailableError``.

A reply the server gives instead of the expected one raises the ``BeanstalkdError`` subclass
named after it (``NOT_FOUND`` -> ``NotFoundError``, ...), exactly as greenstalk does, so code
written against greenstalk catches the same classes. Connection trouble never reaches the
application as ``ConnectionError``: the client fails over, and only when no node could serve
within ``failover_timeout`` does it raise ``UnavailableError``.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every exception this client raises."""


class UnknownResponseError(Error):
    """The server sent a reply this client does not expect for the command."""

    def __init__(self, status: bytes, values: list[bytes] | None = None) -> None:
        super().__init__(status, values or [])
        self.status = status
        self.values = values or []


class BeanstalkdError(Error):
    """Base class for the error replies of the server."""


class BadFormatError(BeanstalkdError):
    """The client sent a malformed command (e.g. an invalid tube name)."""


class BuriedError(BeanstalkdError):
    """The server buried the job (put or release) for lack of memory."""

    def __init__(self, values: list[bytes] | None = None) -> None:
        super().__init__(values or [])
        self.id: int | None = int(values[0]) if values else None


class DeadlineSoonError(BeanstalkdError):
    """A job this client holds reaches its TTR within a second (answer to reserve)."""


class DrainingError(BeanstalkdError):
    """The server is in drain mode and refuses new jobs."""


class ExpectedCrlfError(BeanstalkdError):
    """A job body did not end in CRLF."""


class InternalError(BeanstalkdError):
    """The server detected an internal error."""


class JobTooBigError(BeanstalkdError):
    """The job body is larger than the server's max-job-size."""


class NotFoundError(BeanstalkdError):
    """No such job (or not reserved by this client), or no job in the requested state."""


class NotIgnoredError(BeanstalkdError):
    """The last watched tube cannot be ignored."""


class OutOfMemoryError(BeanstalkdError):
    """The server could not store the job."""


class TimedOutError(BeanstalkdError):
    """No job could be reserved within the timeout."""


class UnknownCommandError(BeanstalkdError):
    """The server does not know the command."""


class NotBeanRaftError(UnknownCommandError):
    """The server answered an admin command (``purge_tube``, ``list_jobs``, ``move_job``,
    ``move_buried``) with ``UNKNOWN_COMMAND``: it is not BeanRaft (a plain beanstalkd?)."""


class PermissionDeniedError(BeanstalkdError):
    """The principal the client authenticated as may not do this to that tube (a BeanRaft
    node with --auth-file); nothing happened."""


def credentials(auth) -> tuple[str, str] | None:
    """``auth=`` checked: None or (principal, token), both non-empty strings without spaces."""
    if auth is None:
        return None
    if (not isinstance(auth, tuple) or len(auth) != 2
            or not all(isinstance(part, str) and part and " " not in part for part in auth)):
        raise TypeError("auth must be a (principal, token) tuple of strings without spaces")
    return auth


class UnavailableError(Error):
    """No node could serve the command within ``failover_timeout``.

    The message lists each address tried and why it failed. For a ``put`` sent to a server
    without idempotent put (plain beanstalkd) whose reply was lost, it also says that the
    outcome is unknown: the job may or may not exist.
    """


#: Error reply class name -> exception class.
ERRORS_BY_REPLY: dict[str, type[BeanstalkdError]] = {
    "BadFormat": BadFormatError,
    "Buried": BuriedError,
    "DeadlineSoon": DeadlineSoonError,
    "Draining": DrainingError,
    "ExpectedCrlf": ExpectedCrlfError,
    "InternalError": InternalError,
    "JobTooBig": JobTooBigError,
    "NotFound": NotFoundError,
    "NotIgnored": NotIgnoredError,
    "OutOfMemory": OutOfMemoryError,
    "TimedOut": TimedOutError,
    "UnknownCommand": UnknownCommandError,
    "PermissionDenied": PermissionDeniedError,
}
