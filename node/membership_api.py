"""GET and POST /admin/members: the members of the cluster, and one change at a time.

Both need the bearer token of ``--admin-token-file``, as everything under /admin/ does
(``auth.needs_token``). ``POST /admin/members`` adds or removes one member; its JSON body is ``{"action": "add"|"remove", "address": "HOST:PORT",
"force": false, "timeout_s": 30}``. It is asked on any node: the change runs on the leader
(``replication/membership.py``). ``fetch_members`` is how ``beanraft serve --join`` learns the
members of the cluster it joins.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import urllib.request

from aiohttp import web

from beanraft import protocol as p
from beanraft.replication import membership

from . import admin_endpoint, token_http
from .admin_endpoint import bad

log = logging.getLogger("beanraft.http")

MAX_TIMEOUT_S = 600.0
STATUS = {membership.NO_LEADER: 503, membership.BUSY: 409, membership.ALREADY_MEMBER: 409,
          membership.NOT_MEMBER: 404, membership.NO_MAJORITY: 409, membership.NO_SECRET: 409,
          membership.DENIED: 409, membership.NOT_RUNNING: 409, membership.TIMEOUT: 504, membership.TRANSFER_FAILED: 503}
FETCH_TIMEOUT_S = 10.0
FETCH_PATIENCE_S = 60.0  # how long serve --join keeps asking a member that does not answer


def _address_ok(value) -> bool:
    if not isinstance(value, str):
        return False
    host, sep, port = value.rpartition(":")
    return bool(sep and host and p.is_decimal(port, 5) and 0 < int(port) <= 65535)


async def _arguments(request):
    doc = await admin_endpoint.json_object(request)
    if isinstance(doc, web.Response):
        return doc
    action, address = doc.get("action"), doc.get("address")
    if action not in (membership.ADD, membership.REMOVE):
        return bad("action is add or remove")
    if not _address_ok(address):
        return bad("address is the Raft address HOST:PORT of the member")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        return bad("force is true or false")
    timeout_s = admin_endpoint.timeout_s(doc, membership.DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S)
    if isinstance(timeout_s, web.Response):
        return timeout_s
    return action, address, force, timeout_s


def routes(node, node_loop: asyncio.AbstractEventLoop) -> list:
    """The routes of ``node``; a change runs on ``node_loop``."""

    async def members(_request):
        raft = node.raft
        status = raft.status
        return web.json_response({"node": status.node, "leader": status.leader,
                                  "members": list(raft.members.members),
                                  "pending": raft.members.pending(),
                                  "last": raft.members.last})

    async def change(request):
        parsed = await _arguments(request)
        if isinstance(parsed, web.Response):
            return parsed
        action, address, force, timeout_s = parsed

        def answer(done: membership.Changed) -> dict:
            log.info("HTTP member %s %s done in %.3f s: members %s", action, address,
                     done.elapsed_s, ", ".join(done.members))
            return {"action": done.action, "address": done.address,
                    "members": list(done.members), "elapsed_s": done.elapsed_s}

        return await admin_endpoint.run_on_node(
            membership.change_membership(node.raft, action, address, force, timeout_s), node_loop,
            membership.MembershipError, STATUS, f"member {action} {address}", answer)

    return [web.get("/admin/members", members), web.post("/admin/members", change)]


def read_members(http: str, token: str | None) -> list[str]:
    """GET /admin/members of the node serving HTTP on ``http`` (blocking, bounded): the members
    it knows; raises MembershipError if it does not answer one."""
    opener = token_http.opener()
    url = f"http://{http}/admin/members"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with opener.open(request, timeout=FETCH_TIMEOUT_S) as reply:
            doc = json.loads(reply.read(1 << 20))
    except (OSError, ValueError) as exc:
        raise membership.MembershipError(
            "join", f"--join {http}: cannot read the members from {url}: "
            f"{getattr(exc, 'reason', exc)}") from None
    members = doc.get("members") if isinstance(doc, dict) else None
    if not isinstance(members, list) or not members or not all(_address_ok(m) for m in members):
        raise membership.MembershipError("join", f"--join {http}: {url} answered no member list")
    return members


async def fetch_members(http: str, self_addr: str, token: str | None) -> list[str]:
    """The Raft addresses of the members of the cluster whose node serves HTTP on ``http``
    (asked with this node's own admin token: the cluster's nodes share it). A node that does not
    answer yet (it may be restarting) is asked again, for up to FETCH_PATIENCE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FETCH_PATIENCE_S
    for attempt in itertools.count(1):
        try:
            members = await loop.run_in_executor(None, read_members, http, token)
            break
        except membership.MembershipError as exc:
            if loop.time() > deadline:
                raise
            if attempt == 1:
                log.warning("%s; asking again for up to %.0f s", exc, FETCH_PATIENCE_S)
            await asyncio.sleep(1.0)
    if self_addr in members:
        log.warning("--join: %s is already a member; catching up as one", self_addr)
    return [m for m in members if m != self_addr]
