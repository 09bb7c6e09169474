"""POST /admin/leader/transfer: move the leadership (``replication/transfer.py``), on any node.

The request is guarded like every mutation (the bearer token of ``--admin-token-file``, see
``api.guard``). The body is optional JSON: ``{"to": "HOST:PORT", "timeout_s": 5}``; without
``to`` the leader picks its most caught-up follower. The handler runs on the HTTP thread and
the transfer on the node's event loop; a follower asks its leader over the peer connection.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from beanraft.replication import transfer

from . import admin_endpoint
from .admin_endpoint import bad

log = logging.getLogger("beanraft.http")

MAX_TIMEOUT_S = 60.0
STATUS = {transfer.NO_LEADER: 503, transfer.UNKNOWN_TARGET: 404, transfer.NOT_CAUGHT_UP: 409,
          transfer.BUSY: 409, transfer.TIMEOUT: 504}


async def _arguments(request) -> tuple[str | None, float] | web.Response:
    doc = await admin_endpoint.json_object(request)
    if isinstance(doc, web.Response):
        return doc
    to = doc.get("to")
    if to is not None and (not isinstance(to, str) or not to.strip()):
        return bad("to is the Raft address HOST:PORT of a member")
    timeout_s = admin_endpoint.timeout_s(doc, transfer.DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S)
    if isinstance(timeout_s, web.Response):
        return timeout_s
    return (to.strip() if to else None), timeout_s


def routes(node, node_loop: asyncio.AbstractEventLoop) -> list:
    """The route of ``node``; the transfer runs on ``node_loop``."""

    async def transfer_leader(request):
        parsed = await _arguments(request)
        if isinstance(parsed, web.Response):
            return parsed
        to, timeout_s = parsed

        def answer(done: transfer.Transferred) -> dict:
            log.info("HTTP leader transfer: %s -> %s", done.previous, done.leader)
            return {"previous": done.previous, "leader": done.leader,
                    "elapsed_s": done.elapsed_s}

        return await admin_endpoint.run_on_node(
            transfer.transfer_leadership(node.raft, to, timeout_s), node_loop,
            transfer.TransferError, STATUS, "leader transfer", answer)

    return [web.post("/admin/leader/transfer", transfer_leader)]
