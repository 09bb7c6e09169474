"""What the HTTP admin endpoints that run work on the node's event loop share: reading their
JSON arguments, refusing bad ones with 400, and turning the work's outcome or error into JSON.

Used by ``membership_api.py`` (POST /admin/members) and ``transfer_api.py``
(POST /admin/leader/transfer). An error answer is ``{"error": message, "code": code}``; its
HTTP status comes from the endpoint's table of codes (500 for a code it does not list), and the
CLI maps ``code`` to its exit status (``leader_cli.admin_call``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("beanraft.http")

BAD_REQUEST = "bad_request"


def bad(message: str) -> web.Response:
    """400, with ``message`` saying what is wrong with the request."""
    return web.json_response({"error": message, "code": BAD_REQUEST}, status=400)


async def json_object(request) -> dict | web.Response:
    """The request's body as a JSON object ({} without a body), or a 400 answer."""
    raw = await request.read() if request.can_read_body else b""
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):  # nesting deeper than the parser's stack, too
        return bad("the body is not JSON")
    if not isinstance(doc, dict):
        return bad("the body is a JSON object")
    return doc


def timeout_s(doc: dict, default_s: float, max_s: float) -> float | web.Response:
    """The body's ``timeout_s`` (``default_s`` when absent), or a 400 answer."""
    value = doc.get("timeout_s", default_s)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.1 <= value <= max_s:
        return bad(f"timeout_s is a number of seconds from 0.1 to {max_s:g}")
    return float(value)


async def run_on_node(work: Awaitable, node_loop: asyncio.AbstractEventLoop, error: type,
                      statuses: dict[str, int], what: str,
                      answer: Callable[[object], dict]) -> web.Response:
    """Run the coroutine ``work`` on ``node_loop``; its result as JSON (``answer``), or its
    ``error`` (an exception with ``.code``) with the status ``statuses`` gives the code."""
    future = asyncio.run_coroutine_threadsafe(work, node_loop)
    try:
        done = await asyncio.wrap_future(future)
    except error as exc:
        log.warning("HTTP %s refused (%s): %s", what, exc.code, exc)
        return web.json_response({"error": str(exc), "code": exc.code},
                                 status=statuses.get(exc.code, 500))
    return web.json_response(answer(done))
