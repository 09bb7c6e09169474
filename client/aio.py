"""``AsyncClient``: the asyncio shell around the core. It only moves bytes and keeps time.

Many commands may be in flight on one connection (pipelining): each call submits its op to
the core, which writes it at once; replies complete the ops' futures in order. At most
``max_in_flight`` ops are outstanding; more callers wait for a slot (the bound of the queue).
A cancelled call gives its op up to the core (``Core.cancel``); its slot is freed when the op
is done: at once if it was not sent, at its reply (and the give-back of a reserved job) if it was.
A lost connection is noticed as soon as the transport reports it; the client reconnects when
there is work queued or jobs held (so a held job's session is resumed within the grace).

Use it as ``async with AsyncClient(addrs) as client:`` or ``await client.connect()`` first.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Iterable, Union

from .addresses import AddressLike, TlsLike, parse_addresses, tls_context
from .api import Api
from .blocking import DEFAULT_FAILOVER_TIMEOUT_S, DEFAULT_TIMEOUT_S, MAX_ABANDONED, reason_of
from .core import DOWN, READY, Core
from .errors import credentials as _credentials
from .errors import Error
from .ops import DEFAULT_TUBE, Op

DEFAULT_MAX_IN_FLIGHT = 64


class _Protocol(asyncio.Protocol):
    """Hands the bytes of one connection to the client; nothing else."""

    def __init__(self, client: "AsyncClient"):
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client._on_data(self, data)

    def eof_received(self) -> bool:
        self.client._on_lost(self, "connection closed by the node")
        return False

    def connection_lost(self, exc) -> None:
        self.client._on_lost(self, reason_of(exc) if exc else "connection closed")


class AsyncClient(Api):
    """The asyncio twin of ``Client``: same arguments and methods, which return awaitables."""

    def __init__(self, address: AddressLike = None, encoding: str | None = "utf-8",
                 use: str = DEFAULT_TUBE, watch: Union[str, Iterable[str]] = DEFAULT_TUBE, *,
                 timeout: float = DEFAULT_TIMEOUT_S,
                 failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT_S,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, seed: int | None = None,
                 tls: TlsLike = None, auth: tuple[str, str] | None = None) -> None:
        self.encoding = encoding
        self.timeout = timeout
        self._tls = tls_context(tls)
        self._use, self._watch = use, watch
        self._core = Core(parse_addresses(address), timeout_s=timeout,
                          failover_timeout_s=failover_timeout, rng=random.Random(seed),
                          auth=_credentials(auth))
        self._slots = asyncio.Semaphore(max_in_flight)
        self._proto: _Protocol | None = None
        self._abandoned: list[_Protocol] = []  # kept open until the session settles (blocking.py)
        self._wake: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._driver: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> "AsyncClient":
        """Connects (failing over as needed) and sets up the tubes."""
        loop = asyncio.get_running_loop()
        self._wake, self._ready = asyncio.Event(), asyncio.Event()
        self._core.start(loop.time())
        self._driver = loop.create_task(self._drive())
        await self._wait_ready()
        for op in self._setup_tubes(self._use, self._watch):
            await self._call(op)
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *args: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection; the client must not be used afterwards."""
        self._closed = True
        if self._driver is not None:
            self._driver.cancel()
            try:
                await self._driver
            except (asyncio.CancelledError, Exception):
                pass
        self._drop()

    @property
    def address(self):
        return self._core.address

    @property
    def failovers(self) -> int:
        return self._core.failovers

    # -- calls -----------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _call(self, op: Op) -> Any:
        if self._closed:
            raise Error("the client is closed")
        # The slot is held until the op is done, not until the caller stops waiting: an op
        # whose caller was cancelled after it was sent is still in flight (Core.cancel).
        await self._slots.acquire()
        future = asyncio.get_running_loop().create_future()

        def done(_: Op) -> None:
            self._slots.release()
            if not future.done():
                future.set_result(None)

        op.callback = done
        try:
            self._core.submit(op, self._now())
            self._after_event()
            await future
        except BaseException:  # cancelled (asyncio.wait_for, task.cancel) or worse
            if not op.done:
                self._core.cancel(op)
                self._after_event()
            raise
        return op.outcome()

    async def _wait_ready(self) -> None:
        while self._core.state != READY:
            if self._driver.done():
                self._driver.result()  # raises what ended it
                raise Error("the client stopped")
            self._ready.clear()
            waiter = asyncio.ensure_future(self._ready.wait())
            try:
                await asyncio.wait([waiter, self._driver], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    # -- moving bytes ----------------------------------------------------------------------

    def _after_event(self) -> None:
        """Write what the core produced and re-arm the no-reply timer."""
        core = self._core
        if core.state == DOWN:
            self._drop(abandon=True)
            self._wake.set()
            return
        if core.state == READY:
            self._ready.set()
            if self._abandoned and core.episode is None:
                self._close_abandoned()
        data = core.data_to_send()
        if data and self._proto is not None and self._proto.transport is not None:
            self._proto.transport.write(data)
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._core.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._core.tick(self._now())
        self._after_event()

    def _on_data(self, proto: _Protocol, data: bytes) -> None:
        if proto is self._proto:
            self._core.receive_data(data, self._now())
            self._after_event()

    def _on_lost(self, proto: _Protocol, reason: str) -> None:
        if proto is self._proto:
            self._core.connection_lost(reason, self._now())
            self._after_event()

    def _drop(self, abandon: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            if abandon:
                self._abandoned.append(proto)
            else:
                proto.transport.abort()
        while len(self._abandoned) > MAX_ABANDONED:
            self._abandoned.pop(0).transport.abort()
        if not abandon:
            self._close_abandoned()

    def _close_abandoned(self) -> None:
        while self._abandoned:
            self._abandoned.pop().transport.abort()

    async def _drive(self) -> None:
        """Connect whenever the core is DOWN and there is a reason to be connected."""
        loop = asyncio.get_running_loop()
        core = self._core
        while not self._closed:
            if core.state != DOWN or (core.idle and not core.held and core.episode is None):
                self._wake.clear()
                await self._wake.wait()
                continue
            core.start(loop.time())
            attempt = core.next_attempt(loop.time())
            if attempt is None:
                if core.state == DOWN and not self._ready.is_set():
                    raise core.last_error  # the first connection never came up
                continue
            address, delay_s = attempt
            if delay_s:
                await asyncio.sleep(delay_s)
            budget = max(0.05, min(self.timeout, core.remaining_budget(loop.time())))
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _Protocol(self), *address, ssl=self._tls,
                                           server_hostname=address[0] if self._tls else None),
                    budget)
            except (OSError, asyncio.TimeoutError) as error:
                core.attempt_failed(address, "connect timed out"
                                    if isinstance(error, asyncio.TimeoutError) else reason_of(error))
                continue
            self._proto = proto
            core.connected(address, loop.time())
            self._after_event()
