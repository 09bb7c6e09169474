"""``beanraft member list|add|remove``: the members of the cluster, through any node's HTTP port.

``list`` reads ``GET /admin/members``; ``add`` and ``remove`` POST to it (``membership_api.py``);
each sends the bearer token read from ``--admin-token-file`` or ``$BEANRAFT_ADMIN_TOKEN``
(everything under /admin/ needs it). The node
asked forwards a change to the leader. Exit statuses: docs/reference/cli.md#beanraft-member.
"""

from __future__ import annotations

import json

import click

from .admin_wire import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE
from .leader_cli import (EXIT_NO_LEADER, EXIT_TIMEOUT, AdminCallFailed, admin_call, exit_failed,
                         read_token)

_HELP = {"help_option_names": ["-h", "--help"]}
EXIT_BUSY = 12
EXIT_NO_MAJORITY = 13
# The endpoint's error code -> exit status; a refusal by the token guard is EXIT_REFUSED.
_EXIT = {"no_leader": EXIT_NO_LEADER, "busy": EXIT_BUSY, "already_member": EXIT_REFUSED,
         "not_member": EXIT_NOT_FOUND, "no_majority": EXIT_NO_MAJORITY, "no_secret": EXIT_REFUSED,
         "denied": EXIT_BUSY, "not_running": EXIT_UNREACHABLE, "timeout": EXIT_TIMEOUT, "transfer_failed": EXIT_NO_LEADER,
         "bad_request": EXIT_REFUSED}
_http_option = click.option("--http", "http", default="127.0.0.1:8301", show_default=True,
                            metavar="HOST:PORT", envvar="BEANRAFT_ADMIN_HTTP",
                            help="HTTP address of any node.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@click.group(context_settings=_HELP)
def member() -> None:
    """List, add and remove the members of the cluster (one change at a time)."""


_token_option = click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
                             envvar="BEANRAFT_ADMIN_TOKEN_FILE",
                             help="File holding the admin token (else $BEANRAFT_ADMIN_TOKEN).")


@member.command("list", context_settings=_HELP)
@_http_option
@_token_option
@_json_option
def list_(http, admin_token_file, as_json):
    """The members, as the node asked knows them, and the leader."""
    token = read_token(admin_token_file)
    try:
        answer = admin_call(f"http://{http}/admin/members", token, None, 10.0, _EXIT)
    except AdminCallFailed as exc:
        exit_failed(exc, as_json)
    if as_json:
        click.echo(json.dumps(answer))
        return
    for address in answer["members"]:
        click.echo(f"{address}{'  leader' if address == answer['leader'] else ''}")
    pending = answer.get("pending")
    if pending:
        click.echo(f"pending: {pending.get('doing') or pending['action'] + ' ' + pending['address']}")
    last = answer.get("last")
    if last:
        click.echo(f"last change: {last['action']} {last['address']}: {last['outcome']}")


def _change(action: str):
    @click.argument("address", metavar="HOST:PORT")
    @_http_option
    @_token_option
    @click.option("--force", is_flag=True,
                  help="Change even though the members the leader hears from could not form "
                       "the new majority, or past an addition still catching up.")
    @click.option("--timeout", type=click.FloatRange(0.1, 600), default=60.0, show_default=True,
                  help="Seconds to wait for the change (an addition: until the new member "
                       "caught up).")
    @_json_option
    def command(address, http, admin_token_file, force, timeout, as_json):
        token = read_token(admin_token_file)
        doc = {"action": action, "address": address, "force": force, "timeout_s": timeout}
        try:
            answer = admin_call(f"http://{http}/admin/members", token, doc, timeout + 15.0, _EXIT)
        except AdminCallFailed as exc:
            exit_failed(exc, as_json)
        if as_json:
            click.echo(json.dumps(answer))
        else:
            click.echo(f"{'added' if action == 'add' else 'removed'} {address} in "
                       f"{answer['elapsed_s']:.3f} s; members: {' '.join(answer['members'])}")
    return command


member.command("add", context_settings=_HELP, help="Add the node whose Raft address is HOST:PORT "
               "(start it first with 'beanraft serve --join'); returns once it caught up.")(
    _change("add"))
member.command("remove", context_settings=_HELP, help="Remove the member HOST:PORT (a leader "
               "hands its leadership over first).")(_change("remove"))
