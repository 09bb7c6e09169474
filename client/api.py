"""The greenstalk 2.x API, written once for both clients.

Every method builds an ``Op`` (``ops.py``) and hands it to ``self._call``: the blocking
``Client`` returns its result, the ``AsyncClient`` returns an awaitable of it. So the names,
signatures, defaults, return values and exceptions are the same in both, and the same as
greenstalk's (plus ``key=`` on ``put``).
"""

from __future__ import annotations

from typing import Any, Generic, Iterable, TypeVar, Union

from beanraft import protocol as p

from . import ops
from .ops import DEFAULT_DELAY, DEFAULT_PRIORITY, DEFAULT_TTR, DEFAULT_TUBE

TBody = TypeVar("TBody", str, bytes)


class Job(Generic[TBody]):
    """A job: ``id`` and ``body``, and the commands on it bound to the client that got it.

    With an ``AsyncClient`` the bound methods return awaitables (``await job.delete()``).
    """

    __slots__ = ("id", "body", "_client")

    def __init__(self, id: int, body: TBody, client: Any = None) -> None:
        self.id = id
        self.body = body
        self._client = client

    def delete(self) -> Any:
        """Deletes this job."""
        return self._client.delete(self)

    def release(self, priority: int = DEFAULT_PRIORITY, delay: int = DEFAULT_DELAY) -> Any:
        """Releases this job (it must be reserved by this client)."""
        return self._client.release(self, priority, delay)

    def bury(self, priority: int = DEFAULT_PRIORITY) -> Any:
        """Buries this job (it must be reserved by this client)."""
        return self._client.bury(self, priority)

    def touch(self) -> Any:
        """Restarts this job's TTR."""
        return self._client.touch(self)

    def stats(self) -> Any:
        """This job's statistics (``stats_job``)."""
        return self._client.stats_job(self)

    def __repr__(self) -> str:
        return f"beanraft.client.Job(id={self.id!r}, body={self.body!r})"


JobOrID = Union[Job, int]


class Api:
    """The command methods; subclasses provide ``_call``, ``_now`` and ``encoding``."""

    encoding: str | None

    def _call(self, op: ops.Op) -> Any:
        raise NotImplementedError

    def _now(self) -> float:
        raise NotImplementedError

    def _job_of(self, reply: Any) -> Job:
        """The Job a RESERVED or FOUND reply gives."""
        body = reply.body
        return Job(reply.job_id, body if self.encoding is None else body.decode(self.encoding),
                   self)

    def _encode(self, body: Union[str, bytes]) -> bytes:
        if isinstance(body, str):
            if self.encoding is None:
                raise TypeError("Unable to encode string with no encoding set")
            return body.encode(self.encoding)
        return body

    def _setup_tubes(self, use: str, watch: Union[str, Iterable[str]]) -> list[ops.Op]:
        """greenstalk's constructor: use, watch, then ignore ``default`` unless watched."""
        steps = []
        if use != DEFAULT_TUBE:
            steps.append(ops.use(use))
        tubes = [watch] if isinstance(watch, str) else list(watch)
        for tube in tubes:
            if tube != DEFAULT_TUBE:
                steps.append(ops.watch(tube))
        if DEFAULT_TUBE not in tubes:
            steps.append(ops.ignore(DEFAULT_TUBE))
        return steps

    # -- producer ----------------------------------------------------------------------

    def put(self, body: TBody, priority: int = DEFAULT_PRIORITY, delay: int = DEFAULT_DELAY,
            ttr: int = DEFAULT_TTR, key: str | None = None) -> Any:
        """Inserts a job into the used tube and returns its id.

        On BeanRaft the put carries ``key`` (a fresh random one when not given; 1-64 characters
        of ``[A-Za-z0-9_.:-]``): the same key within the cluster's dedup window returns the
        first put's id and creates nothing, so a put can be replayed after a failover. Pass
        your own key to deduplicate across processes. Plain beanstalkd ignores the key.
        """
        return self._call(ops.put(self._encode(body), priority, delay, ttr, key))

    def use(self, tube: str) -> Any:
        """Changes the tube that put, peek-* and kick act on."""
        return self._call(ops.use(tube))

    # -- worker ------------------------------------------------------------------------

    def reserve(self, timeout: int | None = None) -> Any:
        """Reserves a job from a watched tube; waits forever, or ``timeout`` seconds and then
        raises ``TimedOutError``. ``DeadlineSoonError`` when a held job's TTR is about to end."""
        return self._call(ops.reserve(timeout, self._now(), self._job_of))

    def reserve_job(self, id: int) -> Any:
        """Reserves the job with this id (``NotFoundError`` if it cannot be reserved)."""
        return self._call(ops.reserve_job(id, self._job_of))

    def delete(self, job: JobOrID) -> Any:
        """Deletes a job (given as Job or id)."""
        return self._call(ops.delete(job))

    def release(self, job: JobOrID, priority: int = DEFAULT_PRIORITY,
                delay: int = DEFAULT_DELAY) -> Any:
        """Releases a reserved job back to ready (or delayed)."""
        return self._call(ops.release(job, priority, delay))

    def bury(self, job: JobOrID, priority: int = DEFAULT_PRIORITY) -> Any:
        """Buries a reserved job."""
        return self._call(ops.bury(job, priority))

    def touch(self, job: JobOrID) -> Any:
        """Restarts the TTR of a reserved job."""
        return self._call(ops.touch(job))

    def watch(self, tube: str) -> Any:
        """Adds a tube to the watch list; returns how many tubes are watched."""
        return self._call(ops.watch(tube))

    def ignore(self, tube: str) -> Any:
        """Removes a tube from the watch list; returns how many tubes are watched."""
        return self._call(ops.ignore(tube))

    # -- other -------------------------------------------------------------------------

    def peek(self, id: int) -> Any:
        """Returns the job with this id."""
        return self._call(ops.peek("peek", p.Peek(id), self._job_of))

    def peek_ready(self) -> Any:
        """Returns the next ready job of the used tube."""
        return self._call(ops.peek("peek_ready", p.PeekReady(), self._job_of))

    def peek_delayed(self) -> Any:
        """Returns the delayed job of the used tube that becomes ready first."""
        return self._call(ops.peek("peek_delayed", p.PeekDelayed(), self._job_of))

    def peek_buried(self) -> Any:
        """Returns the oldest buried job of the used tube."""
        return self._call(ops.peek("peek_buried", p.PeekBuried(), self._job_of))

    def kick(self, bound: int) -> Any:
        """Moves up to ``bound`` buried (else delayed) jobs of the used tube to ready; returns
        how many moved."""
        return self._call(ops.kick(bound))

    def kick_job(self, job: JobOrID) -> Any:
        """Moves one delayed or buried job to ready."""
        return self._call(ops.kick_job(job))

    def stats_job(self, job: JobOrID) -> Any:
        """A job's statistics as a dict."""
        return self._call(ops.stats("stats_job", p.StatsJob(job if isinstance(job, int) else job.id)))

    def stats_tube(self, tube: str) -> Any:
        """A tube's statistics as a dict."""
        return self._call(ops.stats("stats_tube", p.StatsTube(tube)))

    def stats(self) -> Any:
        """The server's statistics as a dict."""
        return self._call(ops.stats("stats", p.Stats()))

    def tubes(self) -> Any:
        """The names of all existing tubes."""
        return self._call(ops.listing("tubes", p.ListTubes()))

    def using(self) -> Any:
        """The used tube."""
        return self._call(ops.using())

    def watching(self) -> Any:
        """The watched tubes."""
        return self._call(ops.listing("watching", p.ListTubesWatched()))

    def pause_tube(self, tube: str, delay: int) -> Any:
        """Stops reserves from ``tube`` for ``delay`` seconds."""
        return self._call(ops.pause_tube(tube, delay))

    # -- BeanRaft's admin commands (NotBeanRaftError from a plain beanstalkd) -----------

    def purge_tube(self, tube: str, state: str) -> Any:
        """Deletes every job of ``tube`` in ``state`` (``ready``, ``delayed``, ``buried`` or
        ``all``; never reserved jobs) in one committed command; returns how many. Not sent
        again after a failover: a lost reply raises ``UnavailableError``."""
        return self._call(ops.purge_tube(tube, state))

    def list_jobs(self, tube: str, state: str = "all", offset: int = 0,
                  limit: int = 100) -> Any:
        """One page of ``tube``'s jobs in ``state`` (``ready``, ``delayed``, ``buried``,
        ``reserved`` or ``all``), in id order: a list of dicts with ``id``, ``state``, ``pri``,
        ``age`` and ``size``. ``limit`` is 1..1000."""
        return self._call(ops.list_jobs(tube, state, offset, limit))

    def move_job(self, job: JobOrID, tube: str) -> Any:
        """Moves an unreserved job to ``tube``, keeping its state; True if it moved, False if
        it was already there."""
        return self._call(ops.move_job(job, tube))

    def move_buried(self, source: str, target: str) -> Any:
        """Moves every buried job of ``source`` to the end of ``target``'s buried list; returns
        how many. Not sent again after a failover: a lost reply raises ``UnavailableError``."""
        return self._call(ops.move_buried(source, target))
