"""Admin commands of the ``beanraft`` CLI: ``tube``, ``job``, ``buried``, ``top`` and
``import-binlog``.

Each command opens one connection to any node's client port (``--address``), sends beanstalk
commands (plain 1.12 ones and the admin extensions, docs/reference/extensions.md) and prints a
short text answer, or JSON with ``--json``. A failure prints ``beanraft: <message>`` on standard
error (and ``{"error": ..., "status": ...}`` on standard output with ``--json``) and exits with
the status of admin_wire (docs/reference/cli.md). ``cli`` adds these to the ``beanraft`` group.
"""

from __future__ import annotations

import base64
import functools
import json
import sys

import click

from beanraft import protocol as p

from . import auth
from .admin_wire import (DEFAULT_ADDRESS, EXIT_NO_ROOM, PRINCIPAL_ENV, TOKEN_FILE_ENV,
                         AdminConnection, AdminError, credentials, parse_yaml, tls_context)

DEFAULT_PAGE = 100
_HELP = {"help_option_names": ["-h", "--help"]}


def _tls_options(command):
    """--tls, --tls-ca, --tls-cert, --tls-key: how to reach a node whose client port has TLS;
    --principal and --token-file: who to authenticate as."""
    for option in reversed((
        click.option("--tls", "use_tls", is_flag=True, envvar="BEANRAFT_TLS",
                     help="The client port speaks TLS; trust the system's CAs."),
        click.option("--tls-ca", type=click.Path(dir_okay=False), default=None,
                     envvar="BEANRAFT_TLS_CA", help="Trust this CA file for the node (implies --tls)."),
        click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
                     envvar="BEANRAFT_TLS_CERT", help="Client certificate, for mutual TLS."),
        click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                     envvar="BEANRAFT_TLS_KEY", help="The client certificate's key."),
        click.option("--principal", default=None, envvar=PRINCIPAL_ENV,
                     help="Authenticate as this principal (nodes with --auth-file)."),
        click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                     envvar=TOKEN_FILE_ENV, help="File holding the principal's token (mode "
                     "0600); without it, the token is read from BEANRAFT_TOKEN."),
    )):
        command = option(command)
    return command


def _connected(command):
    """Adds --address, --timeout, --json and the TLS options; opens the connection; maps
    AdminError to the exit status."""

    @click.option("--address", default=DEFAULT_ADDRESS, show_default=True, metavar="HOST:PORT",
                  envvar="BEANRAFT_ADDRESS", help="Client address of any node.")
    @click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
                  help="Seconds to wait for each reply (a commit may wait for an election).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
    @_tls_options
    @functools.wraps(command)
    def wrapper(address, timeout, as_json, use_tls, tls_ca, tls_cert, tls_key, principal,
                token_file, **kwargs):
        try:
            tls = tls_context(tls_ca, tls_cert, tls_key, use_tls)
            auth = credentials(principal, token_file)
            with AdminConnection(address, timeout, tls, auth) as conn:
                result = command(conn, **kwargs)
        except AdminError as exc:
            if as_json:
                click.echo(json.dumps({"error": str(exc), "status": exc.status}))
            click.echo(f"beanraft: {exc}", err=True)
            sys.exit(exc.status)
        text, data = result
        click.echo(json.dumps(data, indent=2) if as_json else text)

    return wrapper


def _yaml(conn: AdminConnection, req, what: str = ""):
    return parse_yaml(conn.expect(req, p.Ok, what=what).data)


# ------------------------------------------------------------------------------- tube


@click.group(context_settings=_HELP)
def tube() -> None:
    """List tubes, show their counts, pause or purge them."""


@tube.command("list", context_settings=_HELP)
@_connected
def tube_list(conn):
    """The tubes that exist, in list-tubes order."""
    names = _yaml(conn, p.ListTubes())
    return "\n".join(names), names


@tube.command("stats", context_settings=_HELP)
@click.argument("name")
@_connected
def tube_stats(conn, name):
    """stats-tube NAME: its job counts, counters and pause."""
    stats = _yaml(conn, p.StatsTube(name), what=f"tube {name}")
    return "\n".join(f"{key}: {value}" for key, value in stats.items()), stats


@tube.command("pause", context_settings=_HELP)
@click.argument("name")
@click.argument("seconds", type=click.IntRange(0, 2**32 - 1))
@_connected
def tube_pause(conn, name, seconds):
    """Pause NAME for SECONDS (0 ends a pause): no job is reserved from it meanwhile."""
    conn.expect(p.PauseTube(name, seconds), p.Paused, what=f"tube {name}")
    text = f"tube {name} unpaused" if seconds == 0 else f"tube {name} paused for {seconds} s"
    return text, {"tube": name, "paused_s": seconds}


@tube.command("purge", context_settings=_HELP)
@click.argument("name")
@click.option("--state", "state", type=click.Choice(p.PURGE_STATES), required=True,
              help="Which jobs to delete; 'all' is ready, delayed and buried (never reserved).")
@_connected
def tube_purge(conn, name, state):
    """Delete every job of NAME in --state, in one committed command."""
    reply = conn.expect(p.PurgeTube(name, state), p.Purged, what=f"tube {name}")
    return (f"purged {reply.count} {state} job(s) of tube {name}",
            {"tube": name, "state": state, "purged": reply.count})


# -------------------------------------------------------------------------------- job


@click.group(context_settings=_HELP)
def job() -> None:
    """Put, peek, kick, delete or move one job."""


@job.command("put", context_settings=_HELP)
@click.argument("tube_name", metavar="TUBE")
@click.argument("body")
@click.option("--pri", type=click.IntRange(0, 2**32 - 1), default=1024, show_default=True,
              help="Priority (lower is more urgent).")
@click.option("--delay", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seconds before the job is ready.")
@click.option("--ttr", type=click.IntRange(0, 2**32 - 1), default=60, show_default=True,
              help="Seconds a worker may hold the job.")
@_connected
def job_put(conn, tube_name, body, pri, delay, ttr):
    """Put a job with BODY into TUBE ('-' reads the body from standard input)."""
    data = sys.stdin.buffer.read() if body == "-" else body.encode("utf-8")
    conn.expect(p.Use(tube_name), p.Using)
    reply = conn.expect(p.Put(pri, delay, ttr, data), p.Inserted, p.Buried)
    if isinstance(reply, p.Buried):
        raise AdminError(f"job {reply.job_id} was buried: the server has no room to queue it",
                         EXIT_NO_ROOM)
    return f"inserted job {reply.job_id} into tube {tube_name}", {"id": reply.job_id,
                                                                  "tube": tube_name}


@job.command("peek", context_settings=_HELP)
@click.argument("job_id", metavar="ID", type=click.IntRange(0, 2**64 - 1))
@_connected
def job_peek(conn, job_id):
    """Show job ID: its stats and its body."""
    found = conn.expect(p.Peek(job_id), p.Found, what=f"job {job_id}")
    stats = _yaml(conn, p.StatsJob(job_id), what=f"job {job_id}")
    text = "\n".join(f"{key}: {value}" for key, value in stats.items())
    body = found.body.decode("utf-8", "replace")
    data = {"id": job_id, "stats": stats, "body": body,
            "body_base64": base64.b64encode(found.body).decode("ascii")}
    return f"{text}\nbody ({len(found.body)} bytes):\n{body}", data


@job.command("kick", context_settings=_HELP)
@click.argument("job_id", metavar="ID", type=click.IntRange(0, 2**64 - 1))
@_connected
def job_kick(conn, job_id):
    """Make buried or delayed job ID ready."""
    conn.expect(p.KickJob(job_id), p.Kicked, what=f"job {job_id} (buried or delayed)")
    return f"kicked job {job_id}", {"id": job_id, "kicked": True}


@job.command("delete", context_settings=_HELP)
@click.argument("job_id", metavar="ID", type=click.IntRange(0, 2**64 - 1))
@_connected
def job_delete(conn, job_id):
    """Delete job ID (a reserved job only by the worker that holds it)."""
    conn.expect(p.Delete(job_id), p.Deleted, what=f"job {job_id} (or it is reserved)")
    return f"deleted job {job_id}", {"id": job_id, "deleted": True}


@job.command("move", context_settings=_HELP)
@click.argument("job_id", metavar="ID", type=click.IntRange(0, 2**64 - 1))
@click.argument("tube_name", metavar="TUBE")
@_connected
def job_move(conn, job_id, tube_name):
    """Move job ID to TUBE, keeping its id, priority, TTR, body and state (never a reserved job)."""
    reply = conn.expect(p.MoveJob(job_id, tube_name), p.Moved,
                        what=f"job {job_id} (or it is reserved)")
    text = (f"moved job {job_id} to tube {tube_name}" if reply.count
            else f"job {job_id} is already in tube {tube_name}")
    return text, {"id": job_id, "tube": tube_name, "moved": reply.count}


# ----------------------------------------------------------------------------- buried


@click.command(context_settings=_HELP)
@click.argument("tube_name", metavar="TUBE")
@click.option("--offset", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Skip this many buried jobs (in id order).")
@click.option("--limit", type=click.IntRange(1, p.MAX_LIST_LIMIT), default=DEFAULT_PAGE,
              show_default=True, help="Show at most this many jobs.")
@click.option("--move-to", default=None, metavar="TUBE",
              help="Instead of listing, move every buried job of TUBE there (move-buried).")
@_connected
def buried(conn, tube_name, offset, limit, move_to):
    """List the buried jobs of TUBE (id, priority, age, size), or move them all elsewhere."""
    if move_to is not None:
        reply = conn.expect(p.MoveBuried(tube_name, move_to), p.Moved, what=f"tube {tube_name}")
        return (f"moved {reply.count} buried job(s) from {tube_name} to {move_to}",
                {"from": tube_name, "to": move_to, "moved": reply.count})
    jobs = _yaml(conn, p.ListJobs(tube_name, "buried", offset, limit), what=f"tube {tube_name}")
    lines = [f"{'id':>10} {'pri':>10} {'age':>8} {'size':>10}"]
    lines += [f"{j['id']:>10} {j['pri']:>10} {j['age']:>8} {j['size']:>10}" for j in jobs]
    if not jobs:
        lines = [f"no buried jobs in tube {tube_name}" + (f" past {offset}" if offset else "")]
    return "\n".join(lines), jobs


# -------------------------------------------------------------------------------- top


@click.command(context_settings=_HELP)
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, metavar="HOST:PORT",
              envvar="BEANRAFT_ADDRESS", help="Client address of a node, for the tubes.")
@click.option("--http", "http", multiple=True, metavar="HOST:PORT",
              help="HTTP address of a node (repeat); peers its /status names are shown too.  "
                   "[default: 127.0.0.1:8301]")
@click.option("--interval", type=click.FloatRange(0.2), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--max-tubes", type=click.IntRange(1, 1000), default=30, show_default=True,
              help="Show at most this many tubes (the most backed up first).")
@click.option("--once", is_flag=True,
              help="Take two samples --interval apart, print one frame and exit.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_ADMIN_TOKEN_FILE", help="The admin token, for nodes started with "
              "--http-read-token-required (mode 0600); else $BEANRAFT_ADMIN_TOKEN.")
@click.option("--svg", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="With --once: also save the frame as an SVG picture in FILE.")
@_tls_options
def top(address, http, interval, max_tubes, once, admin_token_file, svg, use_tls, tls_ca,
        tls_cert, tls_key, principal, token_file):
    """A live view of the cluster: nodes (role, term, commit, lag, health) and tubes (counts,
    put and delete rates). Ctrl-C quits. With the TLS options, /status is read over HTTPS."""
    from .top import run  # rich is imported only by this command

    try:
        token = auth.cli_token(admin_token_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        tls = tls_context(tls_ca, tls_cert, tls_key, use_tls)
        if svg is not None and not once:
            raise AdminError("--svg needs --once", 2)
        run(address, list(http) or ["127.0.0.1:8301"], interval, max_tubes, once, tls, token,
            svg, credentials(principal, token_file))
    except AdminError as exc:
        click.echo(f"beanraft: {exc}", err=True)
        sys.exit(exc.status)


# ------------------------------------------------------------------------ import-binlog


@click.command("import-binlog", context_settings=_HELP)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--to", "address", required=True, metavar="HOST:PORT", envvar="BEANRAFT_ADDRESS",
              help="Client address of any node of the cluster to import into.")
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds to wait for each reply (a commit may wait for an election).")
@click.option("--dry-run", is_flag=True,
              help="Read and check the binlog and print what it holds; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@_tls_options
def import_binlog(**options):
    """Load the jobs of a stopped beanstalkd's binlog directory (its -b DIR) into a cluster:
    tube, priority, TTR, remaining delay, buried state and body. Running it again imports only
    what is missing."""
    from .importer import import_binlog as run

    run(**options)


COMMANDS = (tube, job, buried, top, import_binlog)
