"""Operator commands: ``beanraft cluster`` (a local cluster), ``beanraft status``, ``beanraft secret``."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import click

from .cli import main

DEFAULT_CLIENT_PORT = 11300
DEFAULT_RAFT_PORT = 21300
DEFAULT_HTTP_PORT = 8301


@main.command()
def secret() -> None:
    """Print a new random cluster secret (give every node the same one)."""
    click.echo(secrets.token_urlsafe(32))


@main.command()
@click.option("-n", "nodes", type=click.IntRange(1, 9), default=3, show_default=True,
              help="How many nodes to start.")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help="Parent directory for the nodes' data (default: a temporary directory).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--client-port", type=int, default=DEFAULT_CLIENT_PORT, show_default=True,
              help="First client port; node i uses this + i.")
@click.option("--raft-port", type=int, default=DEFAULT_RAFT_PORT, show_default=True,
              help="First Raft port; node i uses this + i.")
@click.option("--http-port", type=int, default=DEFAULT_HTTP_PORT, show_default=True,
              help="First HTTP port; node i uses this + i.")
def cluster(nodes, data, host, client_port, raft_port, http_port) -> None:
    """Start a local cluster of N nodes on loopback; Ctrl-C stops them all."""
    temporary = data is None
    data = data or tempfile.mkdtemp(prefix="beanraft-cluster-")
    secret_value = secrets.token_urlsafe(32)
    rafts = [f"{host}:{raft_port + i}" for i in range(nodes)]
    procs = []
    env = dict(os.environ, BEANRAFT_CLUSTER_SECRET=secret_value)
    click.echo(f"{'node':<6}{'client':<22}{'raft':<22}{'http':<32}data")
    for i in range(nodes):
        node_dir = os.path.join(data, f"node{i + 1}")
        cmd = [sys.executable, "-m", "beanraft.node", "serve", "-l", host, "-p", str(client_port + i),
               "-b", node_dir, "--raft", rafts[i], "--http", f"{host}:{http_port + i}"]
        for peer in rafts:
            if peer != rafts[i]:
                cmd += ["--peer", peer]
        procs.append(subprocess.Popen(cmd, env=env))
        click.echo(f"{i + 1:<6}{host + ':' + str(client_port + i):<22}{rafts[i]:<22}"
                   f"{'http://' + host + ':' + str(http_port + i) + '/status':<31} {node_dir}")
    click.echo("Ctrl-C stops the cluster." + (" Its data is temporary." if temporary else ""))
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the nodes too, like Ctrl-C
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        click.echo("a node exited; stopping the cluster", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_all(procs)
    if temporary:
        import shutil

        shutil.rmtree(data, ignore_errors=True)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _stop_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@main.command()
@click.argument("addresses", nargs=-1)
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per request.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw /status documents as JSON.")
def status(addresses, timeout, as_json) -> None:
    """Print one line per node (role, term, commit, lag, health) from their HTTP endpoints.

    ADDRESSES are HOST:PORT of the nodes' --http endpoints (default: the three of
    'beanraft cluster'). Exits 1 when no node reports a leader.
    """
    addresses = addresses or [f"127.0.0.1:{DEFAULT_HTTP_PORT + i}" for i in range(3)]
    docs = {a: _fetch_status(a, timeout) for a in addresses}
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


def _fetch_status(address: str, timeout: float) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{address}/status", timeout=timeout) as response:
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
        health = "ready" if d.get("ready") else "not ready"
        click.echo(f"{address:<22}{d['node']:<22}{d['role']:<10}{d['term']:>6}{d['commit_index']:>9}"
                   f"{d['applied_index']:>9}{lag:>6}  {health}")
