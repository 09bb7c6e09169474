"""Operator commands: ``beanraft cluster`` (a local cluster), ``beanraft status``, ``beanraft secret``.

``cli`` adds them to the ``beanraft`` group; this module does not import ``cli``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.request

import click

from . import auth, token_http
from .launcher import HOST, ServeProcess, local_specs
from .top import node_health
from .local_cluster import Supervisor

DEFAULT_CLIENT_PORT = 11300
DEFAULT_RAFT_PORT = 21300
DEFAULT_HTTP_PORT = 8301
DEFAULT_MAX_RESTARTS = 3


@click.command()
def secret() -> None:
    """Print a new random cluster secret (give every node the same one).

    Redirected to a file (``beanraft secret > FILE``), it first makes that file readable by its
    owner only, as ``serve`` requires.
    """
    try:
        out = sys.stdout.fileno()
        if stat.S_ISREG(os.fstat(out).st_mode):
            os.fchmod(out, 0o600)
    except (OSError, ValueError):  # not a real file (a pipe, a test runner's buffer), or not ours
        pass
    click.echo(secrets.token_urlsafe(32))


@click.command()
@click.option("-n", "nodes", type=click.IntRange(1, 9), default=3, show_default=True,
              help="How many nodes to start.")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help="Parent directory for the nodes' data (default: a temporary directory).")
@click.option("--host", default=HOST, show_default=True, help="Loopback address to bind.")
@click.option("--client-port", type=int, default=DEFAULT_CLIENT_PORT, show_default=True,
              help="First client port; node I uses this + I - 1.")
@click.option("--raft-port", type=int, default=DEFAULT_RAFT_PORT, show_default=True,
              help="First Raft port; node I uses this + I - 1.")
@click.option("--http-port", type=int, default=DEFAULT_HTTP_PORT, show_default=True,
              help="First HTTP port; node I uses this + I - 1.")
@click.option("--max-restarts", type=click.IntRange(0), default=DEFAULT_MAX_RESTARTS,
              show_default=True, help="How many times each node is started again after it exits.")
def cluster(nodes, data, host, client_port, raft_port, http_port, max_restarts) -> None:
    """Start a local cluster of N nodes on loopback; restart a node that dies; Ctrl-C (SIGINT) or
    SIGTERM stops them all."""
    temporary = data is None
    data = data or tempfile.mkdtemp(prefix="beanraft-cluster-")
    specs = local_specs(nodes, data, [client_port + i for i in range(nodes)],
                        [raft_port + i for i in range(nodes)], [http_port + i for i in range(nodes)],
                        host)
    env = dict(os.environ, BEANRAFT_CLUSTER_SECRET=secrets.token_urlsafe(32),
               BEANRAFT_PEER_HTTP=" ".join(spec.http for spec in specs))  # the dashboard's failover
    processes = [ServeProcess(spec, [s.raft for s in specs if s is not spec], env=env,
                              new_session=True, label_output=True) for spec in specs]
    click.echo(f"{'node':<7}{'client':<22}{'raft':<22}{'http':<32}data")
    for spec in specs:
        client = f"{spec.host}:{spec.client_port}"
        click.echo(f"{spec.name:<7}{client:<22}{spec.raft:<22}"
                   f"{'http://' + spec.http + '/status':<31} {spec.data_dir}")
    click.echo(f"Dashboard: http://{specs[0].http}/")
    click.echo("Ctrl-C stops the cluster." + (" Its data is temporary." if temporary else ""))
    supervisor = Supervisor(processes, max_restarts, lambda line: click.echo(line, err=True))
    try:
        code = supervisor.run()
    finally:
        if temporary:
            shutil.rmtree(data, ignore_errors=True)
    sys.exit(code)


@click.command()
@click.argument("addresses", nargs=-1)
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per request.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw /status documents as JSON.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_ADMIN_TOKEN_FILE", help="The admin token, for nodes started with "
              "--http-read-token-required (mode 0600); else $BEANRAFT_ADMIN_TOKEN.")
def status(addresses, timeout, as_json, admin_token_file) -> None:
    """Print one line per node (role, term, commit, lag, health) from their HTTP endpoints.

    ADDRESSES are HOST:PORT of the nodes' --http endpoints (default: the three of
    'beanraft cluster'). Exits 1 when no node reports a leader.
    """
    try:
        token = auth.cli_token(admin_token_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    addresses = addresses or [f"127.0.0.1:{DEFAULT_HTTP_PORT + i}" for i in range(3)]
    docs = {a: _fetch_status(a, timeout, token) for a in addresses}
    if as_json:
        click.echo(json.dumps(docs, indent=2))
    else:
        _print_table(docs)
    if not _has_leader(docs):
        click.echo("no leader", err=True)
        sys.exit(1)


def _has_leader(docs: dict) -> bool:
    """A node says it leads, or every reachable node names the same leader and is ready."""
    reachable = [d for d in docs.values() if d]
    if any(d.get("role") == "leader" for d in reachable):
        return True
    named = {d.get("leader") for d in reachable}
    return bool(reachable) and len(named) == 1 and None not in named and all(
        d.get("ready") for d in reachable)


def _fetch_status(address: str, timeout: float, token: str | None = None) -> dict | None:
    request = urllib.request.Request(f"http://{address}/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # Proxies from the environment, as urlopen used them; never a redirect (token_http).
        with token_http.opener(proxies=True).open(request, timeout=timeout) as response:
            return json.load(response)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _print_table(docs: dict) -> None:
    top = max((d["commit_index"] for d in docs.values() if d), default=0)
    click.echo(f"{'http':<22}{'node':<22}{'role':<10}{'term':>6}{'commit':>9}{'applied':>9}"
               f"{'lag':>6}  health")
    for address, d in docs.items():
        if d is None:
            click.echo(f"{address:<22}{'-':<22}{'down':<10}{'-':>6}{'-':>9}{'-':>9}{'-':>6}  unreachable")
            continue
        lag = top - d["applied_index"]
        health = node_health(d)
        click.echo(f"{address:<22}{d['node']:<22}{d['role']:<10}{d['term']:>6}{d['commit_index']:>9}"
                   f"{d['applied_index']:>9}{lag:>6}  {health}")
