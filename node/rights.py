"""What each right allows, command by command: a pure decision over a request and a few facts.

Theory of operation. A principal holds three rights, each over the tubes its patterns match
(``auth.Principal``): *produce*, *consume* and *administer*. ``RULES`` says, for every request
type, which right it needs and on which tube: the used tube, every watched tube, the tube it
names, or the tube of the job it names. ``decide`` applies the rule to ``Facts`` that the
connection read from the replicated state just before (``guard.py``) and returns the reply that
refuses the command, or None to let it run:

* PERMISSION_DENIED when the right is missing; nothing happens and the connection goes on.
* NOT_FOUND for a job in a tube the principal holds no right on at all: such jobs are as
  invisible as the tubes that ``list-tubes`` leaves out.
* A job that does not exist is answered NOT_FOUND here, as the state machine would: letting
  the command through could let it act on a job created meanwhile under that id.

Jobs the connection reserved stay its own: ``delete``, ``release``, ``bury`` and ``touch`` of
them need *consume* on their tube (checked again at every command, so a reload that takes the
right away stops them); ``delete`` of any other job needs *administer*. ``release``, ``bury``
and ``touch`` of a job the connection does not hold are answered NOT_FOUND by the state machine,
as in beanstalkd, so they need no rule of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from beanraft import protocol as p

from .principals import Principal

DENIED = p.PermissionDenied()
HIDDEN = p.NotFound()

# Where a rule finds its tube.
ANY, USED, WATCHED, NAMED, JOB, OWN_JOB, DELETE, MOVE_JOB, MOVE_BURIED, SEE_NAMED, SEE_JOB = (
    "any", "used", "watched", "named", "job", "own-job", "delete", "move-job", "move-buried",
    "see-named", "see-job")

#: request type -> (where the tube comes from, the right it needs there).
RULES: dict[type, tuple[str, str | None]] = {
    p.Put: (USED, "produce"),
    p.PutKey: (USED, "produce"),
    p.Reserve: (WATCHED, "consume"),
    p.ReserveWithTimeout: (WATCHED, "consume"),
    p.ReserveJob: (JOB, "consume"),
    p.Watch: (NAMED, "consume"),
    p.Delete: (DELETE, None),
    p.Release: (OWN_JOB, "consume"),
    p.Bury: (OWN_JOB, "consume"),
    p.Touch: (OWN_JOB, "consume"),
    p.Peek: (JOB, "administer"),
    p.KickJob: (JOB, "administer"),
    p.PeekReady: (USED, "administer"),
    p.PeekDelayed: (USED, "administer"),
    p.PeekBuried: (USED, "administer"),
    p.Kick: (USED, "administer"),
    p.PauseTube: (NAMED, "administer"),
    p.PurgeTube: (NAMED, "administer"),
    p.ListJobs: (NAMED, "administer"),
    p.MoveJob: (MOVE_JOB, "administer"),
    p.MoveBuried: (MOVE_BURIED, "administer"),
    p.ImportJob: (USED, "administer"),  # creates jobs in any state: an operator's tool
    p.Use: (SEE_NAMED, None),
    p.StatsTube: (SEE_NAMED, None),
    p.StatsJob: (SEE_JOB, None),
    # Every authenticated principal: its own connection's state, server-wide figures without
    # tube names, and the session extensions (a session id is a bearer secret of its own).
    p.Ignore: (ANY, None),
    p.ListTubeUsed: (ANY, None),
    p.ListTubesWatched: (ANY, None),
    p.ListTubes: (ANY, None),  # answered with the visible tubes only (guard.py)
    p.Stats: (ANY, None),
    p.SessionId: (ANY, None),
    p.SessionResume: (ANY, None),
    p.Quit: (ANY, None),
    p.Auth: (ANY, None),
}

#: The rules that read the replicated state (the connection's earlier commands must be applied).
NEEDS_STATE = frozenset({WATCHED, JOB, OWN_JOB, DELETE, MOVE_JOB, SEE_JOB})


@dataclass(frozen=True)
class Facts:
    """What a rule may look at: the connection's used tube and watch list, and the job the
    request names as (its tube, whether this connection holds it), None if there is none."""

    used: str = "default"
    watched: tuple[str, ...] = ("default",)
    job: tuple[str, bool] | None = None


def source(req) -> str:
    return RULES[type(req)][0]


def decide(principal: Principal, req, facts: Facts):
    """The refusal of ``req`` by ``principal`` (PERMISSION_DENIED or NOT_FOUND), or None."""
    where, right = RULES[type(req)]
    if where == ANY:
        return None
    if where == USED:
        return None if principal.may(right, facts.used) else DENIED
    if where == WATCHED:
        return None if all(principal.may(right, t) for t in facts.watched) else DENIED
    if where == NAMED:
        return None if principal.may(right, req.tube) else DENIED
    if where == SEE_NAMED:
        return None if principal.may_see(req.tube) else DENIED
    if where == MOVE_BURIED:
        both = principal.may(right, req.source) and principal.may(right, req.target)
        return None if both else DENIED
    return _job_rule(principal, req, facts, where, right)


def _job_rule(principal: Principal, req, facts: Facts, where: str, right: str | None):
    if facts.job is None:
        return HIDDEN  # no such job (yet): never let the id meet a job created meanwhile
    tube, held = facts.job
    if not principal.may_see(tube):
        return HIDDEN
    if where == SEE_JOB:
        return None
    if where == OWN_JOB:
        return None if not held or principal.may(right, tube) else DENIED
    if where == DELETE:
        needed = "consume" if held else "administer"
        return None if principal.may(needed, tube) else DENIED
    if where == MOVE_JOB:
        both = principal.may(right, tube) and principal.may(right, req.tube)
        return None if both else DENIED
    return None if principal.may(right, tube) else DENIED
