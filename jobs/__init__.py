"""beanraft.jobs — the job state machine: beanstalkd 1.12 minus sockets, pure and deterministic.

``Machine.apply_batch(now_ns, commands)`` applies replicated commands (plain tuples, see
``commands.Op``) and returns replies and events; queries, snapshots and digests sit beside it.
"""

from .commands import Op
from .machine import Machine

__all__ = ["Machine", "Op"]
