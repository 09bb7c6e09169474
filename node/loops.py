"""Which event loop runs the node (``serve --event-loop``): asyncio's own, or uvloop.

The loop is the socket shell: it reads the clients' bytes, calls the connections and writes
their replies, and on a busy node that is a large part of the CPU per command
(docs/reference/performance.md). uvloop, a dependency of BeanRaft, does the same work in C
behind the same asyncio interfaces, so nothing else in the node depends on the choice. ``auto``
(the default) takes uvloop when it can be imported and falls back to asyncio's loop otherwise
(a platform without a uvloop build); ``uvloop`` insists (a usage error without it);
``asyncio`` never uses it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

CHOICES = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


class LoopUnavailable(RuntimeError):
    """``uvloop`` was asked for and cannot be imported."""


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The factory of the loop ``choice`` stands for, and that loop's name for the log."""
    if choice not in CHOICES:
        raise ValueError(f"event loop must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise LoopUnavailable(f"--event-loop uvloop: uvloop cannot be imported ({exc}); "
                                      "install it with pip install uvloop") from None
        else:
            return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
    return asyncio.new_event_loop, "asyncio"


def run(main: Callable[[], Awaitable[T]], choice: str = "auto") -> T:
    """Run the coroutine ``main()`` to its end on a new loop of ``choice``, as asyncio.run does."""
    factory, _name = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def running_loop_name() -> str:
    """The name of the loop this coroutine runs on: ``uvloop`` or ``asyncio``."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
