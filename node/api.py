"""The dashboard's JSON endpoints under /api, and the admin token that guards mutations.

Theory of operation. The handlers run on the HTTP thread (``http.py``).
* Reads first pass the node's read barrier (as a client's stats-tube does, on the node's event
  loop), so that a follower shows what was committed anywhere before; without a leader they
  answer this node's applied state after ``BARRIER_TIMEOUT_S``, marked ``"stale": true``. Then
  they take the state lock for a bounded walk: at most ``MAX_TUBES`` tubes, at most
  ``MAX_BURIED`` buried ids, one job.
* Mutations are the ordinary beanstalk commands (``kick-job``, ``delete``) of a session of
  their own, proposed through the node's group commit on the node's event loop and committed
  through Raft like any client's: OPEN, the command, CLOSE. The reply is the command's wire
  reply, mapped to an HTTP status.
* Every mutating request (any method but GET, HEAD and OPTIONS, on any path) and everything
  under /admin/ needs ``Authorization: Bearer <principal>:<token>`` of a principal of the auth
  file, or ``Bearer <token>`` with the token of ``--admin-token-file`` (one mechanism,
  ``principals.py``; ``auth.py`` decides which requests need it); with
  ``--http-read-token-required`` the reads need it too. A kick or delete also needs the
  principal to administer the job's tube (``rights.py``), and /admin/ a principal that
  administers every tube. Without either option those endpoints answer 403: nothing can change
  the queue over HTTP.
* The page may be served by one node and read another after a failover, so the endpoints allow
  any origin (CORS). The token is a header the page sends on purpose, never a cookie, so
  another site cannot make a browser use it.
* A token is checked at its address's turn (the back-off after failures, ``principals.py``).
  aiohttp lets a handler run on after its client hung up, so the guard gives the turn up as
  soon as the connection closes, as the client port does: attempts sent and abandoned by the
  thousand would otherwise each sleep out a turn behind the others, holding their requests
  (20,000 grew a node by 800 MB) and keeping the right token from that address waiting.
  Once a principal is known, its request is not closed to make room for other connections
  (``http_connections.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from aiohttp import web

from beanraft import protocol as p
from beanraft.jobs.commands import Op
from beanraft.replication.batcher import OutcomeUnknown

from . import auth, rights
from .principals import Principal
from .translate import NS, to_command, to_reply

log = logging.getLogger("beanraft.http")

PRINCIPAL = web.RequestKey("principal", Principal)  # who an authenticated request speaks for
MAX_TUBES = 1000  # tubes listed by GET /api/tubes (the first ones in list-tubes order)
MAX_BURIED = 500  # buried ids listed by GET /api/tubes/{tube}/buried (limit's ceiling)
DEFAULT_BURIED = 50
MAX_PEEK_BYTES = 4096  # of a job's body shown by GET /api/jobs/{id} (size is given whole)
BARRIER_TIMEOUT_S = 0.5  # a read waits this long for the read barrier, then answers stale
MUTATION_TIMEOUT_S = 5.0  # the page's kick or delete, from proposal to commit
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def guard(authenticator, connections, reads_closed: bool = False):
    """aiohttp middleware: CORS on every answer, a principal's bearer token where
    ``auth.needs_token`` (``authenticator``: a ``principals.Authenticator``, None when neither
    --auth-file nor --admin-token-file is given; ``connections``: the endpoint's
    ``http_connections.Connections``)."""

    @web.middleware
    async def middleware(request, handler):
        connections.began(request)
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS_HEADERS)
        if auth.needs_token(request.method, request.path, reads_closed):
            refusal = await _refusal(authenticator, connections, request)
            if refusal is not None:
                refusal.headers.update(CORS_HEADERS)
                return refusal
        held = connections.serving(request) if "principal" in request else contextlib.nullcontext()
        with held:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(CORS_HEADERS)
                raise
        response.headers.update(CORS_HEADERS)
        return response

    return middleware


async def _refusal(authenticator, connections, request) -> web.Response | None:
    if authenticator is None:
        return web.json_response(
            {"error": "this endpoint needs the admin token, and this node has none: start it "
                      "with --admin-token-file or --auth-file"}, status=403)
    # Tokens are compared in constant time (principals.py): they cannot be guessed bytewise.
    attempt = asyncio.ensure_future(authenticator.authenticate_bearer(
        request.headers.get("Authorization", ""), request.remote or "unknown"))
    await asyncio.wait((attempt, connections.gone(request)), return_when=asyncio.FIRST_COMPLETED)
    if not attempt.done():  # the client hung up: its turn goes to the next attempt
        attempt.cancel()
        return web.json_response({"error": "the client hung up"}, status=401)  # never sent
    principal = attempt.result()
    if principal is None:  # counted and logged by the authenticator, with the address
        return web.json_response({"error": "missing or wrong admin token"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    if request.path.startswith(auth.ADMIN_PREFIX) and "*" not in principal.administer:
        return web.json_response({"error": f"principal {principal.name} does not administer "
                                           "every tube"}, status=403)
    request[PRINCIPAL] = principal
    return None


# ----------------------------------------------------------------------------- reads


def _tubes(machine, now_ns: int) -> dict:
    tubes = []
    for tube in itertools.islice(machine.tube_list, MAX_TUBES):
        paused = tube.pause_ns > 0
        tubes.append({
            "name": tube.name, "urgent": tube.urgent_ct, "ready": tube.ready_ct,
            "reserved": tube.reserved_ct, "delayed": tube.delayed_ct, "buried": tube.buried_ct,
            "total_jobs": tube.total_jobs, "deletes": tube.cmd_delete,
            "waiting": len(tube.waiters), "pause_s": tube.pause_ns // NS if paused else 0,
            "pause_left_s": max(0, tube.unpause_at_ns - now_ns) / NS if paused else 0,
        })
    return {"tubes": tubes, "truncated": len(machine.tube_list) > MAX_TUBES}


def _buried(machine, name: str, limit: int) -> dict | None:
    tube = machine.tubes.get(name)
    if tube is None:
        return None
    jobs = []
    for job_id in itertools.islice(tube.buried, limit):
        job = machine.jobs[job_id]
        jobs.append({"id": job.id, "pri": job.pri, "size": len(job.body),
                     "created_ns": job.created_ns})
    return {"tube": name, "count": tube.buried_ct, "jobs": jobs}


def _job(machine, job_id: int, now_ns: int) -> dict | None:
    fields = machine.stats_job(job_id, now_ns)
    if fields is None:
        return None
    body = machine.jobs[job_id].body
    return {"id": job_id, "stats": dict(fields), "size": len(body),
            "body": body[:MAX_PEEK_BYTES].decode("utf-8", "replace"),
            "body_truncated": len(body) > MAX_PEEK_BYTES}


def _job_id(request) -> int:
    text = request.match_info["job_id"]
    if not p.is_decimal(text, 20) or not 0 < int(text) < 2**64:
        raise web.HTTPBadRequest(text="a job id is a positive integer")
    return int(text)


# ----------------------------------------------------------------------------- mutations


async def barrier_passed(node, node_loop: asyncio.AbstractEventLoop, timeout_s: float) -> bool:
    """True once the node's read barrier, run on ``node_loop``, passed within ``timeout_s``:
    every command committed before the call is then applied on this node."""
    barrier = asyncio.run_coroutine_threadsafe(node.read_barrier(), node_loop)
    try:
        await asyncio.wait_for(asyncio.wrap_future(barrier), timeout_s)
    except (OutcomeUnknown, asyncio.TimeoutError):
        return False
    return True


async def _run_command(node, req) -> object:
    """Run one beanstalk command in a session of its own, on the node's event loop."""
    if node.refuses(req):
        return p.OutOfMemory()
    sid = node.new_sid()
    await node.commit.submit((Op.OPEN, sid, 1))
    try:
        return to_reply(await node.commit.submit(to_command(req, sid, 2, node.dedup)))
    finally:
        await node.commit.submit((Op.CLOSE, sid, 3))


_STATUS = {p.Kicked: 200, p.Deleted: 200, p.NotFound: 404, p.OutOfMemory: 503,
           p.PermissionDenied: 403}


def routes(node, node_loop: asyncio.AbstractEventLoop) -> list:
    """The /api routes of ``node``; mutations are run on ``node_loop``."""
    raft = node.raft

    async def read(query):
        """``query(machine)`` after the read barrier (or without it, marked stale)."""
        stale = not await barrier_passed(node, node_loop, BARRIER_TIMEOUT_S)
        doc = raft.read(query)
        if doc is not None:
            doc["stale"] = stale
        return doc

    async def tubes(_request):
        return web.json_response(await read(lambda m: _tubes(m, raft.cluster_now_ns())))

    async def buried(request):
        try:
            limit = min(max(int(request.query.get("limit", DEFAULT_BURIED)), 1), MAX_BURIED)
        except ValueError:
            raise web.HTTPBadRequest(text="limit is an integer") from None
        name = request.match_info["tube"]
        doc = await read(lambda m: _buried(m, name, limit))
        if doc is None:
            raise web.HTTPNotFound(text=f"no tube {name!r}")
        return web.json_response(doc)

    async def job(request):
        job_id = _job_id(request)
        doc = await read(lambda m: _job(m, job_id, raft.cluster_now_ns()))
        if doc is None:
            raise web.HTTPNotFound(text=f"no job {job_id}")
        return web.json_response(doc)

    async def mutate(request, req) -> web.Response:
        # The job's tube decides the right, so read it only once every command committed
        # before this request is applied here, as the TCP guard does: a follower that has not
        # applied the job's put yet would answer NOT_FOUND for a job that exists.
        if not await barrier_passed(node, node_loop, MUTATION_TIMEOUT_S):
            return web.json_response({"error": "no leader: cannot read the job"}, status=503)
        owner = raft.read(lambda machine: machine.job_owner(0, req.job_id))
        refusal = rights.decide(request[PRINCIPAL], req, rights.Facts(job=owner))
        if refusal is not None:
            reply = p.encode(refusal).strip().decode()
            return web.json_response({"reply": reply}, status=_STATUS.get(type(refusal), 403))
        future = asyncio.run_coroutine_threadsafe(_run_command(node, req), node_loop)
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(future), MUTATION_TIMEOUT_S)
        except (OutcomeUnknown, asyncio.TimeoutError):
            return web.json_response({"error": "no leader: the outcome is unknown"}, status=503)
        log.info("HTTP %s %d: %s", req.name, req.job_id, p.encode(reply).strip().decode())
        return web.json_response({"reply": p.encode(reply).strip().decode()},
                                 status=_STATUS.get(type(reply), 500))

    async def kick(request):
        return await mutate(request, p.KickJob(_job_id(request)))

    async def delete(request):
        return await mutate(request, p.Delete(_job_id(request)))

    return [web.get("/api/tubes", tubes), web.get("/api/tubes/{tube}/buried", buried),
            web.get("/api/jobs/{job_id}", job), web.post("/api/jobs/{job_id}/kick", kick),
            web.delete("/api/jobs/{job_id}", delete)]
