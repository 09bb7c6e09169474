"""POST /admin/backup: stream a consistent backup of this node's state (``replication/backup.py``).

Theory of operation. The handler runs on the HTTP thread; the middleware has already checked the
admin token (``auth.py``: everything under /admin/ needs it).
* First the read barrier, on the node's event loop, as for a linearizable read: the backup then
  holds everything committed anywhere before the request arrived. Without a leader the request
  fails with 503, unless ``?stale=1`` asks for this node's applied state as it is.
* Then the Raft thread forks at its next tick; the child writes the file into a pipe, and this
  handler copies the pipe into the response in ``CHUNK_BYTES`` pieces. The response's length is
  not known in advance (chunked); the header inside the file announces the body's length and
  checksum, so a reader detects a response cut short. The response begins with the child's
  first bytes: a child that fails before them is answered 503; one that fails after makes the
  handler drop the connection instead of ending the response cleanly.
* One backup at a time per node (409 for a second). Both ends are bounded by ``STALL_S``: a
  reader that takes nothing for that long is dropped, and a child that writes nothing and runs
  not at all for that long is hung (``BackupStream.read``). Either way the child is killed and
  reaped on a thread of its own (``abandon``: a hung child may never exit by itself), and the
  slot is freed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from beanraft.replication.raft import BackupBusy

from .api import barrier_passed

log = logging.getLogger("beanraft.backup")

CHUNK_BYTES = 1 << 20
BARRIER_TIMEOUT_S = 5.0  # the read barrier before a backup (an election may be under way)
START_TIMEOUT_S = 10.0  # from the request to the fork (one tick, normally)
STALL_S = 60.0  # a reader that takes no bytes for this long is dropped


def routes(node, node_loop: asyncio.AbstractEventLoop) -> list:
    """The /admin/backup route of ``node``."""

    async def backup(request):
        stale = request.query.get("stale") in ("1", "true", "yes")
        if not stale and not await barrier_passed(node, node_loop, BARRIER_TIMEOUT_S):
            return web.json_response(
                {"error": "no leader confirmed what is committed; ask again, or add "
                          "?stale=1 for this node's applied state as it is"}, status=503)
        try:
            future = node.raft.take_backup()
        except BackupBusy as exc:
            return web.json_response({"error": str(exc)}, status=409)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                node.raft.backup_done()

        try:
            return await _stream(request, future, release)
        finally:
            release()

    return [web.post("/admin/backup", backup)]


def _failure(stalled: bool, abandoned) -> str:
    """Why a backup failed before its first byte, for the client."""
    if stalled:
        return f"the backup failed: its child wrote nothing for {STALL_S:.0f} s; ask again"
    if abandoned is not None:
        return f"the backup failed: {abandoned}; ask again"
    return "the backup failed: its child ended before writing anything; ask again"


def _log_failure(stream, request, sent: int, stalled: bool, abandoned, written: bool) -> None:
    """One line for a backup that did not complete, saying why."""
    if stalled:
        log.error("backup at index %d to %s failed after %d bytes: its child (pid %d) wrote "
                  "nothing and did not run for %.0f s; it is killed", stream.index,
                  request.remote, sent, stream.pid, STALL_S)
    elif abandoned is not None:
        log.warning("backup at index %d to %s abandoned after %d bytes: %s", stream.index,
                    request.remote, sent, abandoned)
    elif not (written and sent):
        log.error("backup at index %d to %s failed after %d bytes: its child did not finish",
                  stream.index, request.remote, sent)


def _abandon_if_started(future) -> None:
    """The request gave up, but the Raft thread had begun to fork: end that child. May run on
    the Raft thread, which must not wait for the child (``abandon`` kills and reaps it apart)."""
    if not future.cancelled() and future.exception() is None:
        future.result().abandon()


async def _stream(request, future, release) -> web.StreamResponse:
    """Streams the backup; ``release`` frees this node's backup slot once the child is done,
    before the outcome is logged, so the next backup is taken as soon as the log says so."""
    loop = asyncio.get_running_loop()
    try:
        stream = await asyncio.wait_for(asyncio.wrap_future(future), START_TIMEOUT_S)
    except asyncio.TimeoutError:  # wait_for cancelled the request: no child, unless one is forking
        future.add_done_callback(_abandon_if_started)
        return web.json_response({"error": "the backup did not start"}, status=503)
    except Exception as exc:  # the fork itself failed (no memory, no process slot)
        return web.json_response({"error": f"the backup did not start: {exc}"}, status=503)
    began, sent, streamed, stalled, abandoned = time.monotonic(), 0, False, False, None
    response = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream",
        "X-BeanRaft-Backup-Index": str(stream.index),
        "Content-Disposition": f'attachment; filename="beanraft-{stream.index}.backup"'})
    try:
        while True:
            chunk = await loop.run_in_executor(None, stream.read, CHUNK_BYTES, STALL_S)
            if chunk is None:
                stalled = True
                break
            if not chunk:
                streamed = True
                break
            if not response.prepared:
                await response.prepare(request)
            await asyncio.wait_for(response.write(chunk), STALL_S)
            sent += len(chunk)
    except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
        abandoned = exc or type(exc).__name__
    finally:
        if streamed:  # the child closed the pipe: it is exiting, and its status tells
            written = await loop.run_in_executor(None, stream.finish)
        else:  # the child may be alive, even hung: kill it, never wait for it here
            stream.abandon()
            written = False
        release()
    _log_failure(stream, request, sent, stalled, abandoned, written)
    if not (streamed and written and sent):
        if not response.prepared:  # nothing sent yet: the client may be told why
            return web.json_response({"error": _failure(stalled, abandoned)}, status=503)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    log.info("backup at index %d sent to %s: %d bytes in %.2f s (fork %.1f ms)", stream.index,
             request.remote, sent, time.monotonic() - began, stream.fork_ms)
    return response
