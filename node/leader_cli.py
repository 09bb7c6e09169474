"""``beanraft leader transfer``: move the leadership through any node's HTTP admin endpoint.

The command POSTs to ``/admin/leader/transfer`` (``transfer_api.py``) with the bearer token read
from ``--admin-token-file`` or the environment variable ``BEANRAFT_ADMIN_TOKEN``, and maps the
answer to a message and an exit status (docs/reference/cli.md#beanraft-leader-transfer).
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request

import click

from . import auth, token_http
from .admin_wire import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_SERVER_ERROR, EXIT_UNREACHABLE

_HELP = {"help_option_names": ["-h", "--help"]}
EXIT_NO_LEADER = 9
EXIT_NOT_CAUGHT_UP = 10
EXIT_TIMEOUT = 11
# The endpoint's error code -> exit status; a refusal by the token guard is EXIT_REFUSED.
_EXIT = {"no_leader": EXIT_NO_LEADER, "unknown_target": EXIT_NOT_FOUND,
         "not_caught_up": EXIT_NOT_CAUGHT_UP, "busy": EXIT_REFUSED, "timeout": EXIT_TIMEOUT,
         "bad_request": EXIT_REFUSED}


class AdminCallFailed(Exception):
    """An admin endpoint could not be reached or refused; ``status`` is the CLI's exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def read_token(path: str | None) -> str:
    """The admin token from ``path`` (mode 0600), else from $BEANRAFT_ADMIN_TOKEN
    (raises click.UsageError)."""
    try:
        token = auth.cli_token(path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not token:
        raise click.UsageError("the admin token is needed: give --admin-token-file FILE or set "
                               "BEANRAFT_ADMIN_TOKEN")
    return token


def admin_call(url: str, token: str, doc: dict | None, timeout_s: float, exits: dict,
               context=None) -> dict:
    """GET ``url`` (``doc`` None) or POST ``doc`` as JSON, with the bearer token; the JSON answer.

    Raises AdminCallFailed: an error answer's ``code`` mapped through ``exits`` (a refusal by the
    token guard is EXIT_REFUSED), or EXIT_UNREACHABLE."""
    data = json.dumps(doc).encode() if doc is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if doc is not None else "GET",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with token_http.opener(context).open(request, timeout=timeout_s) as reply:
            return json.loads(reply.read(1 << 20))
    except token_http.RedirectRefused as exc:
        raise AdminCallFailed(f"{url} {exc.reason}", EXIT_SERVER_ERROR) from None
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read(1 << 20))
        except ValueError:
            answer = {}
        message = answer.get("error") or f"HTTP {exc.code}"
        code = answer.get("code")
        raise AdminCallFailed(message, exits.get(code, EXIT_REFUSED if exc.code in (401, 403)
                                                 else EXIT_SERVER_ERROR)) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminCallFailed(f"cannot reach {url}: {reason}", EXIT_UNREACHABLE) from None


def exit_failed(exc: AdminCallFailed, as_json: bool):
    """Say why an admin call failed (also as JSON with --json) and exit with its status."""
    if as_json:
        click.echo(json.dumps({"error": str(exc), "status": exc.status}))
    click.echo(f"beanraft: {exc}", err=True)
    sys.exit(exc.status)


@click.group(context_settings=_HELP)
def leader() -> None:
    """Move the leadership of the cluster."""


@leader.command("transfer", context_settings=_HELP)
@click.option("--to", "to", default=None, metavar="HOST:PORT",
              help="Raft address of the member to lead; default: the most caught-up follower.")
@click.option("--http", "http", default="127.0.0.1:8301", show_default=True, metavar="HOST:PORT",
              envvar="BEANRAFT_ADMIN_HTTP", help="HTTP address of any node.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_ADMIN_TOKEN_FILE",
              help="File holding the admin token (mode 0600); else $BEANRAFT_ADMIN_TOKEN.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=5.0, show_default=True,
              help="Seconds the leader has to hand over.")
@click.option("--tls-ca", type=click.Path(dir_okay=False), default=None, envvar="BEANRAFT_TLS_CA",
              help="The HTTP port speaks TLS: trust this CA file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
def transfer(to, http, admin_token_file, timeout, tls_ca, as_json):
    """Hand the leadership to another member (ask any node; it forwards to the leader)."""
    token = read_token(admin_token_file)
    context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
    url = f"{'https' if context else 'http'}://{http}/admin/leader/transfer"
    doc = {"timeout_s": timeout, **({"to": to} if to else {})}
    try:
        answer = admin_call(url, token, doc, timeout + 5.0, _EXIT, context)
    except AdminCallFailed as exc:
        exit_failed(exc, as_json)
    if as_json:
        click.echo(json.dumps(answer))
    elif answer["previous"] == answer["leader"]:
        click.echo(f"{answer['leader']} is already the leader")
    else:
        click.echo(f"leader is now {answer['leader']} (was {answer['previous']}; "
                   f"{answer['elapsed_s']:.3f} s)")
