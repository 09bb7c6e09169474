"""POST /admin/leader/transfer: move the leadership (``replication/transfer.py``), on any node.

The request is guarded like every mutation (the bearer token of ``--admin-token-file``, see
``api.guard``). The body is optional JSON: ``{"to": "HOST:PORT", "timeout_s": 5}``; without
``to`` the leader picks its most caught-up follower. The handler runs on the HTTP thread and
the transfer on the node's event loop; a follower asks its leader over the peer connection.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from beanraft.replication import transfer

log = logging.getLogger("beanraft.http")

MAX_TIMEOUT_S = 60.0
STATUS = {transfer.NO_LEADER: 503, transfer.UNKNOWN_TARGET: 404, transfer.NOT_CAUGHT_UP: 409,
          transfer.BUSY: 409, transfer.TIMEOUT: 504}


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message, "code": "bad_request"}, status=400)


async def _arguments(request) -> tuple[str | None, float] | web.Response:
    raw = await request.read() if request.can_read_body else b""
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return _bad("the body is not JSON")
    if not isinstance(doc, dict):
        return _bad("the body is a JSON object")
    to = doc.get("to")
    if to is not None and (not isinstance(to, str) or not to.strip()):
        return _bad("to is the Raft address HOST:PORT of a member")
    timeout_s = doc.get("timeout_s", transfer.DEFAULT_TIMEOUT_S)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
            or not 0.1 <= timeout_s <= MAX_TIMEOUT_S:
        return _bad(f"timeout_s is a number of seconds from 0.1 to {MAX_TIMEOUT_S:g}")
    return (to.strip() if to else None), float(timeout_s)


def routes(node, node_loop: asyncio.AbstractEventLoop) -> list:
    """The route of ``node``; the transfer runs on ``node_loop``."""

    async def transfer_leader(request):
        parsed = await _arguments(request)
        if isinstance(parsed, web.Response):
            return parsed
        to, timeout_s = parsed
        future = asyncio.run_coroutine_threadsafe(
            transfer.transfer_leadership(node.raft, to, timeout_s), node_loop)
        try:
            done = await asyncio.wrap_future(future)
        except transfer.TransferError as exc:
            log.warning("HTTP leader transfer refused (%s): %s", exc.code, exc)
            return web.json_response({"error": str(exc), "code": exc.code},
                                     status=STATUS.get(exc.code, 500))
        log.info("HTTP leader transfer: %s -> %s", done.previous, done.leader)
        return web.json_response({"previous": done.previous, "leader": done.leader,
                                  "elapsed_s": done.elapsed_s})

    return [web.post("/admin/leader/transfer", transfer_leader)]
