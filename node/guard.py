"""The gate in front of a client connection's commands when the node has an auth file.

Theory of operation. A connection of a node started with ``--auth-file`` owns a ``Guard``. Every
request passes ``screen`` before anything else happens to it (no counter, no proposal):
* Before authentication, ``auth`` is checked (``auth.Authenticator``), ``quit`` closes, a line
  the parser rejected gets its usual error without any effect (a put header that would have
  burnt a job id burns none), and every other command is answered AUTH_REQUIRED.
* A mutual-TLS client whose certificate subject names a principal is authenticated from the
  start. ``auth`` may be sent again: success switches principal, failure leaves the connection
  unauthenticated.
* After authentication, the principal is looked up by name for every command, so the file of
  the moment applies (a principal removed by a reload is unauthenticated again), and its rule
  (``rights.py``) is applied to facts read from the replicated state. Rules that look at the
  connection's watch list or at a job first wait for the connection's earlier commands to be
  applied (``flush``), so a pipelined ``use`` or ``reserve`` is seen by the next check. The used
  tube is mirrored here, so pipelined puts need no read.
* ``list-tubes`` is answered here with the tubes the principal may see.
"""

from __future__ import annotations

import asyncio
import logging

from beanraft import protocol as p

from . import rights
from .principals import Authenticator, Principal

log = logging.getLogger("beanraft.auth")


def peer_address(transport) -> str:
    """The client's IP address (port left out: the back-off is per address), or "unix"."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unix"


class Guard:
    """One connection's authentication state and its permission checks."""

    def __init__(self, conn, authenticator: Authenticator):
        self.conn = conn
        self.auth = authenticator
        self.name: str | None = None
        self.used: str | None = "default"  # None: unknown (after session-resume), read it
        self.peer = peer_address(conn.transport)
        self._attempt: asyncio.Future | None = None  # an authentication in progress
        principal = authenticator.by_certificate(conn.transport.get_extra_info("peercert"))
        if principal is not None:
            self.name = principal.name
            log.debug("connection %x from %s is principal %s by its certificate", conn.sid,
                      self.peer, principal.name)

    @property
    def principal(self) -> Principal | None:
        return self.auth.get(self.name)

    async def screen(self, req):
        """The reply that answers ``req`` here instead of running it, or None to run it."""
        if isinstance(req, p.Quit):
            return None
        if isinstance(req, p.Auth):
            return await self._authenticate(req)
        principal = self.principal
        if isinstance(req, p.Rejected):
            return req.reply if principal is None else None
        if principal is None:
            return p.AuthRequired()
        if isinstance(req, p.ListTubes):
            return await self._list_tubes(principal)
        refusal = rights.decide(principal, req, await self._facts(req))
        if refusal is None:
            self._follow(req)
        return refusal

    async def _authenticate(self, req: p.Auth):
        await self.conn.flush()  # replies stay in order: the earlier commands answer first
        self._attempt = asyncio.ensure_future(
            self.auth.authenticate(req.principal, req.token, self.peer))
        try:
            principal = await self._attempt
        except asyncio.CancelledError:
            if not self._attempt.cancelled() or asyncio.current_task().cancelling():
                raise
            principal = None  # given up (``abandon``): the client is gone
        finally:
            self._attempt = None
        self.name = None if principal is None else principal.name
        if principal is None:
            return p.AuthFailed()
        self.conn.open_session()
        return p.Authenticated()

    def abandon(self) -> None:
        """The client hung up: an authentication still waiting for its turn (or its check) is
        given up, and its turn goes to the next attempt from the address."""
        if self._attempt is not None:
            self._attempt.cancel()

    async def _facts(self, req) -> rights.Facts:
        where = rights.source(req)
        if where == rights.USED and self.used is not None:
            return rights.Facts(used=self.used)
        if where not in rights.NEEDS_STATE and where != rights.USED:
            return rights.Facts()
        await self.conn.flush()
        if where not in (rights.USED, rights.WATCHED):
            # On a follower, what the whole cluster committed before: a job put through
            # another node is judged by its tube, not taken for a missing one.
            await self.conn.node.read_barrier()
        sid = self.conn.sid
        job_id = getattr(req, "job_id", None)

        def read(machine):
            used = machine.list_tube_used(sid) or "default"
            watched = tuple(machine.list_tubes_watched(sid) or ("default",))
            job = machine.job_owner(sid, job_id) if job_id is not None else None
            return rights.Facts(used, watched, job)

        facts = self.conn.node.raft.read(read)
        self.used = facts.used
        return facts

    def _follow(self, req) -> None:
        """Keep the mirrored used tube in step with a command that runs."""
        if isinstance(req, p.Use):
            self.used = req.tube
        elif isinstance(req, p.SessionResume):
            self.used = None  # the resumed session's own; read before the next check

    async def _list_tubes(self, principal: Principal):
        await self.conn.flush()
        await self.conn.node.read_barrier()
        names = self.conn.node.raft.read(lambda machine: machine.list_tubes())
        return p.Ok(p.yaml_list(name for name in names if principal.may_see(name)))
