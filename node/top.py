"""``beanraft top``: a live terminal view of the cluster, drawn with rich.

Theory of operation. Every ``interval`` seconds one *sample* is taken:

* nodes: GET /status of each ``--http`` address (urllib, 2 s timeout each), then of every HTTP
  address those documents name in ``http_peers`` (a node's ``--peer-http``), at most
  ``MAX_NODES`` in all. With a TLS context (the node uses TLS, which then covers its HTTP port
  too) the documents are read over HTTPS with that context: its CA and client certificate. Raft peers that no HTTP address reports on are shown from what the
  leader knows of them (connected, match index), without term or health;
* tubes: ``list-tubes`` then ``stats-tube`` for each (at most ``MAX_TUBES_SAMPLED``) over one
  client connection, reopened after a failure.

Rates are the differences of two samples divided by the time between them: puts from the tube's
``total-jobs``, deletes from its ``cmd-delete`` (which counts purged jobs too). A tube that
appeared or was destroyed meanwhile has no rate ("-"). ``--once`` takes two samples
``interval`` apart and prints one frame, so its rates are real.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from beanraft import protocol as p

from . import token_http
from .admin_wire import EXIT_UNREACHABLE, AdminConnection, AdminError, parse_yaml
from .launcher import fetch_status

#: Tubes whose stats one sample asks for (a sample costs one round trip per tube).
MAX_TUBES_SAMPLED = 500
HTTP_TIMEOUT_S = 2.0
#: The most nodes one sample asks for /status (given and discovered).
MAX_NODES = 16


@dataclass
class Sample:
    at: float
    nodes: list[dict] = field(default_factory=list)
    tubes: dict[str, dict] = field(default_factory=dict)
    error: str | None = None


def _status(address: str, token: str | None = None,
            tls: ssl.SSLContext | None = None) -> dict | None:
    host, _, port = address.rpartition(":")
    if not p.is_decimal(port, 5):
        return None
    if tls is None:
        return fetch_status(host, int(port), HTTP_TIMEOUT_S, token=token)
    return _https_status(host, int(port), tls, token)


def _https_status(host: str, port: int, tls: ssl.SSLContext, token: str | None) -> dict | None:
    """GET https://host:port/status with ``tls`` (bypassing any proxy), or None."""
    opener = token_http.opener(tls)
    request = urllib.request.Request(f"https://{host}:{port}/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT_S) as reply:
            doc = json.loads(reply.read(1 << 20))
            return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def sample_nodes(addresses: list[str], token: str | None = None,
                 tls: ssl.SSLContext | None = None) -> list[dict]:
    """One row per node: those given or discovered by HTTP address, then Raft peers that only
    the leader's /status names."""
    docs: dict[str, dict | None] = {}
    wave = list(dict.fromkeys(addresses))[:MAX_NODES]
    # In waves, each fetched in parallel: the given nodes, then those they name, and so on,
    # so that a node that does not answer costs one timeout per wave, not one per node.
    with ThreadPoolExecutor(max_workers=MAX_NODES) as pool:
        while wave:
            docs.update(zip(wave, pool.map(functools.partial(_status, token=token, tls=tls),
                                           wave)))
            named = [peer for doc in docs.values() for peer in (doc or {}).get("http_peers", [])]
            wave = list(dict.fromkeys(a for a in named if a not in docs))
            wave = wave[:MAX_NODES - len(docs)]
    return node_rows(docs)


def node_health(doc: dict) -> str:
    """One word or two for a node's /status document: what an operator looks at first."""
    if doc.get("journal_failed"):
        return "journal failed"
    if doc.get("draining"):
        return "draining"
    return "ready" if doc.get("ready") else "not ready"


def node_rows(docs: dict[str, dict | None]) -> list[dict]:
    """The node table's rows from the /status documents by HTTP address (None: no answer)."""
    top_commit = max((d["commit_index"] for d in docs.values() if d), default=0)
    rows, seen = [], set()
    for address, doc in docs.items():
        if doc is None:
            rows.append({"node": address, "role": "down", "health": "unreachable"})
            continue
        seen.add(doc["node"])
        health = node_health(doc)
        rows.append({"node": doc["node"], "role": doc["role"], "term": doc["term"],
                     "commit": doc["commit_index"], "applied": doc["applied_index"],
                     "lag": top_commit - doc["applied_index"], "health": health,
                     "leader": doc["role"] == "leader"})
    for doc in docs.values():
        for peer in (doc or {}).get("peers", []):
            if peer["address"] in seen or doc["role"] != "leader":
                continue
            seen.add(peer["address"])
            match = peer.get("match_index")
            rows.append({"node": peer["address"], "role": "peer", "commit": None,
                         "applied": match, "lag": None if match is None else top_commit - match,
                         "health": "connected" if peer.get("connected") else "disconnected"})
    return rows


def sample_tubes(conn: AdminConnection) -> dict[str, dict]:
    names = parse_yaml(conn.expect(p.ListTubes(), p.Ok).data)[:MAX_TUBES_SAMPLED]
    tubes = {}
    for name in names:
        reply = conn.request(p.StatsTube(name))
        if isinstance(reply, p.Ok):  # NOT_FOUND: destroyed since list-tubes
            tubes[name] = parse_yaml(reply.data)
    return tubes


class Sampler:
    """Takes samples; keeps the client connection open between them."""

    def __init__(self, address: str, http: list[str], tls=None, token: str | None = None,
                 auth=None):
        self.address, self.http, self.tls, self.token = address, http, tls, token
        self.auth = auth
        self.conn: AdminConnection | None = None

    def take(self) -> Sample:
        sample = Sample(time.monotonic(), sample_nodes(self.http, self.token, self.tls))
        try:
            if self.conn is None:
                self.conn = AdminConnection(self.address, HTTP_TIMEOUT_S * 2, self.tls, self.auth)
            sample.tubes = sample_tubes(self.conn)
        except AdminError as exc:
            sample.error = str(exc)
            if self.conn is not None:
                self.conn.close()
            self.conn = None
        return sample

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _rate(now: Sample, before: Sample | None, tube: str, key: str) -> str:
    if before is None or tube not in before.tubes or now.at <= before.at:
        return "-"
    delta = now.tubes[tube][key] - before.tubes[tube][key]
    return f"{max(delta, 0) / (now.at - before.at):.1f}"


def _cell(value) -> str:
    return "-" if value is None else str(value)


def render(now: Sample, before: Sample | None, max_tubes: int) -> Group:
    nodes = Table(title="nodes", title_justify="left", expand=False)
    for column in ("node", "role", "term", "commit", "applied", "lag", "health"):
        nodes.add_column(column, justify="left" if column in ("node", "role", "health") else "right",
                         no_wrap=column == "node")
    for row in now.nodes:
        role = f"[bold]{row['role']}[/bold]" if row.get("leader") else row["role"]
        nodes.add_row(row["node"], role, _cell(row.get("term")), _cell(row.get("commit")),
                      _cell(row.get("applied")), _cell(row.get("lag")), row["health"])
    tubes = Table(title="tubes", title_justify="left", expand=False)
    for column in ("tube", "ready", "reserved", "delayed", "buried", "urgent", "put/s",
                   "delete/s", "paused"):
        # Names are never cut: on a narrow terminal the number columns give way first.
        tubes.add_column(column, justify="left" if column == "tube" else "right",
                         no_wrap=column == "tube")
    ranked = sorted(now.tubes.items(), key=lambda item: (
        -item[1]["current-jobs-ready"] - item[1]["current-jobs-buried"], item[0]))
    for name, stats in ranked[:max_tubes]:
        paused = stats["pause-time-left"]
        tubes.add_row(name, *(str(stats[f"current-jobs-{k}"]) for k in
                              ("ready", "reserved", "delayed", "buried", "urgent")),
                      _rate(now, before, name, "total-jobs"), _rate(now, before, name, "cmd-delete"),
                      f"{paused} s" if paused else "")
    parts = [nodes, tubes]
    if len(now.tubes) > max_tubes:
        parts.append(f"{len(now.tubes) - max_tubes} more tube(s) not shown")
    if now.error:
        parts.append(f"[red]tubes: {now.error}[/red]")
    return Group(*parts)


def run(address: str, http: list[str], interval: float, max_tubes: int, once: bool,
        tls=None, token: str | None = None, svg: str | None = None,
        auth: tuple[str, str] | None = None) -> None:
    """Draw the view every ``interval`` s; with ``once``, print one frame (and, with ``svg``,
    also write it to that file as SVG) and return. ``auth``: (principal, token) for the client
    port of a node with --auth-file."""
    sampler = Sampler(address, http, tls, token, auth)
    try:
        if once:
            first = sampler.take()
            time.sleep(interval)
            frame = sampler.take()
            if frame.error and first.error:
                raise AdminError(frame.error, EXIT_UNREACHABLE)
            console = Console(width=120, record=svg is not None)
            console.print(render(frame, first, max_tubes))
            if svg is not None:
                console.save_svg(svg, title="beanraft top")
            return
        before = None
        with Live(auto_refresh=False, screen=False) as live:
            while True:
                now = sampler.take()
                live.update(render(now, before, max_tubes), refresh=True)
                before = now
                time.sleep(max(0.0, interval - (time.monotonic() - now.at)))
    except KeyboardInterrupt:
        pass
    finally:
        sampler.close()
