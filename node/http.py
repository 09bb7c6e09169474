"""The HTTP endpoint of a node (aiohttp): /status, /healthz, /readyz, /metrics, the dashboard
at / and its JSON endpoints under /api (``api.py``), and /admin/backup (``backup.py``).

Theory of operation. The endpoint runs its own event loop in a thread of its own, so pollers
never take turns of the loop that serves clients and proposes commits: however many there are,
they only share the interpreter with it (the GIL, handed over every 0.5 ms, see ``app.py``).
What the handlers read is thread-safe and cheap (``status.py``). A malformed request is logged
as one DEBUG line, not as aiohttp's ERROR traceback: a port scanner is not an error of ours; the
line names what is wrong, never the bytes the client sent (they may hold its token).
Bounds on what a stranger can make the endpoint hold: ``http_connections.MAX_CONNECTIONS``
connections, each sending at most ``http_connections.MAX_REQUEST_BYTES`` per request; a
connection's next request head must be whole within ``HEAD_TIMEOUT_S`` of its accept or of its
previous answer (aiohttp's keep-alive timeout, which also closes a connection that waits with
half a head), and hold at most ``MAX_HEADERS`` headers of ``MAX_FIELD_BYTES`` each after a
request line of ``MAX_LINE_BYTES``; a body is read only after the token is checked, and at most
``MAX_BODY_BYTES`` of it (413 past that).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from importlib import resources

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from . import accept, api, backup, http_connections, membership_api, transfer_api
from .status import Cached, Digester, Metrics, encode, status_document

log = logging.getLogger("beanraft.http")

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
MAX_REASON_CHARS = 200  # of a malformed request's reason in its log line
HEAD_TIMEOUT_S = 5.0  # for a connection's next request head: from its accept or last answer
MAX_HEADERS = 32  # in one request head (a browser's fetch with a token sends about 20)
MAX_FIELD_BYTES = 8190  # of one header's name or value (aiohttp's default, stated here)
MAX_LINE_BYTES = 8190  # of the request line
MAX_BODY_BYTES = 16 << 10  # of a request body (the admin endpoints' JSON: tens of bytes)
# What aiohttp's reasons quote (the bytes it was sent: "Invalid header value char: b'...'"), and
# a quote left open (a literal cut short).
_QUOTED = re.compile(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*"|b?['"].*""")


class _RequestLog:
    """aiohttp's server logger: requests that are not HTTP become one DEBUG line each."""

    def __init__(self, logger: logging.Logger):
        self._log = logger

    def _one_line(self, msg, args, exc) -> bool:
        if isinstance(exc, HttpProcessingError):
            # aiohttp's messages span lines (the bad bytes, a caret under them): fold them, and
            # leave out the bytes they quote, which may be a header holding the client's token.
            reason = _QUOTED.sub("'...'", " ".join(str(exc.message or type(exc).__name__).split()))
            if len(reason) > MAX_REASON_CHARS:
                reason = reason[:MAX_REASON_CHARS] + "..."
            self._log.debug("%s: %s", msg % args if args else msg, reason)
            return True
        return False

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if not self._one_line(msg, args, exc_info):
            self._log.error(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg, *args, exc_info=None, **kwargs) -> None:
        if not self._one_line(msg, args, exc_info):
            self._log.debug(msg, *args, exc_info=exc_info, **kwargs)

    def __getattr__(self, name):
        return getattr(self._log, name)


DASHBOARD_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}


def _dashboard_routes() -> list:
    """The dashboard's static files, read once from the package (no build step, no CDN)."""
    folder = resources.files("beanraft.node") / "dashboard"
    files = {name: (folder / name).read_bytes() for name in DASHBOARD_FILES}

    def serve(name):
        async def handler(_request):
            return web.Response(body=files[name], content_type=DASHBOARD_FILES[name],
                                headers={"Cache-Control": "no-cache"})
        return handler

    return [web.get("/", serve("index.html"))] + [
        web.get(f"/dashboard/{name}", serve(name)) for name in DASHBOARD_FILES]


def _routes(node, node_loop: asyncio.AbstractEventLoop,
            connections: http_connections.Connections) -> web.Application:
    metrics = Metrics(node)
    node.commit.on_latency = metrics.commit_latency.observe
    status_bytes = Cached(lambda: encode(status_document(node)))
    metrics_bytes = Cached(metrics.render)
    digester = Digester(node.raft)

    async def status(request):
        if request.query.get("digest") in ("1", "true", "yes"):
            index, digest, counts = await digester.latest()
            doc = status_document(node, counts)
            doc.update({"digest": digest, "digest_index": index})
            return web.json_response(doc)
        # Rebuilt at once when readiness changes: /status never contradicts /readyz.
        return web.Response(body=status_bytes.get(node.is_ready()), content_type="application/json",
                            charset="utf-8")

    async def healthz(_request):
        return web.json_response({"ok": True})

    async def readyz(_request):
        ready = node.is_ready()
        return web.json_response({"ready": ready, "leader": node.raft.status.leader},
                                 status=200 if ready else 503)

    async def prometheus(_request):
        return web.Response(body=metrics_bytes.get(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[api.guard(
        node.auth, connections, node.config.http_read_token_required)])
    app.add_routes([web.get("/status", status), web.get("/healthz", healthz),
                    web.get("/readyz", readyz), web.get("/metrics", prometheus)])
    app.add_routes(api.routes(node, node_loop) + transfer_api.routes(node, node_loop)
                   + backup.routes(node, node_loop) + membership_api.routes(node, node_loop)
                   + _dashboard_routes())
    return app


class HttpEndpoint:
    """The endpoint's thread and event loop; ``start`` binds (or raises), ``cleanup`` stops."""

    def __init__(self, node, address: str, node_loop: asyncio.AbstractEventLoop):
        self.address = address
        self._connections = http_connections.Connections()
        self._app = _routes(node, node_loop, self._connections)
        self._tls = node.tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise OSError(f"HTTP endpoint {self.address} did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._app, access_log=None, logger=_RequestLog(log),
                               keepalive_timeout=HEAD_TIMEOUT_S, max_headers=MAX_HEADERS,
                               max_field_size=MAX_FIELD_BYTES, max_line_size=MAX_LINE_BYTES)
        try:
            await runner.setup()
            self._connections.serve(runner.server)
            host, _, port = self.address.rpartition(":")
            # Not aiohttp's TCPSite: asyncio's accept loop floods the log when descriptors run out.
            listeners = accept.listen_tcp(asyncio.get_running_loop(), host, int(port),
                                          self._connections, "HTTP port", self._tls)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            await runner.cleanup()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            for listener in listeners:
                listener.close()
            await runner.cleanup()

    async def cleanup(self) -> None:
        """Stop serving and wait (bounded) for the thread to end."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, STOP_TIMEOUT_S)


async def start_http(node, address: str) -> HttpEndpoint:
    """Serve the endpoint on HOST:PORT; return it (``await endpoint.cleanup()`` stops it)."""
    endpoint = HttpEndpoint(node, address, asyncio.get_running_loop())
    await asyncio.get_running_loop().run_in_executor(None, endpoint.start)
    log.info("HTTP endpoint on %s://%s/status (dashboard at /; mutations and backups %s%s)",
             "https" if node.tls else "http", address,
             "need a principal's token" if node.auth is not None else "disabled",
             "; reads need a token" if node.config.http_read_token_required else "")
    return endpoint
