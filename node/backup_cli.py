"""``beanraft backup NODE FILE`` and ``beanraft restore FILE -b DIR``.

``backup`` asks a node's HTTP endpoint for ``POST /admin/backup`` with the admin token, checks
the file as it arrives (``replication.backup_file.BackupReader``) and writes it to a temporary
file beside FILE (``PARTIAL_PREFIX``, locked while it is written, so that the next backup into
that directory removes one a killed backup left: ``replication/leftovers.py``), renamed onto
FILE only once complete and intact. Given the leader, it asks a ready follower it names in
``http_peers`` instead (``--exact`` keeps the node given): the leader's CPU is the cluster's
bottleneck. ``restore`` checks a backup whole and writes a new data directory
(``replication.restore``); nothing is written for a file that is not an intact backup.

Exit statuses: 0 done, 2 usage (bad token file, bad address), 4 refused (wrong token, no token on
the node, target not empty), 7 the node failed (or the file is damaged, or cannot be written
here), 8 unreachable (or not an HTTP port).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException

import click

from beanraft.replication import leftovers
from beanraft.replication.backup_file import BackupFileError, BackupHeader, BackupReader
from beanraft.replication.snapshot_file import fsync_dir
from beanraft.replication.restore import RestoreError, restore_data_dir

from . import auth, token_http
from .admin_wire import EXIT_REFUSED, EXIT_SERVER_ERROR, EXIT_UNREACHABLE

EXIT_USAGE = 2
_HELP = {"help_option_names": ["-h", "--help"]}
CHUNK_BYTES = 1 << 20
PARTIAL_PREFIX = ".beanraft-backup-"  # the file being written beside FILE


class BackupFailed(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Http:
    """Requests to nodes' HTTP endpoints, with the token and TLS settings, bypassing proxies and
    never following a redirect (``token_http``)."""

    def __init__(self, token: str | None, tls_ca: str | None, timeout_s: float):
        self.token, self.timeout_s = token, timeout_s
        self.scheme = "https" if tls_ca else "http"
        self._opener = token_http.opener(
            ssl.create_default_context(cafile=tls_ca) if tls_ca else None)

    def open(self, address: str, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.scheme}://{address}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return self._opener.open(request, timeout=self.timeout_s)
        except token_http.RedirectRefused as exc:
            raise BackupFailed(f"{address} {exc.reason}", EXIT_SERVER_ERROR) from None
        except urllib.error.HTTPError as exc:
            raise BackupFailed(f"{address}: {_reason(exc)}",
                               EXIT_REFUSED if exc.code in (401, 403, 409) else EXIT_SERVER_ERROR)
        except (OSError, ValueError) as exc:
            raise BackupFailed(f"cannot reach {address}: {exc}", EXIT_UNREACHABLE) from None
        except HTTPException as exc:  # not OSError: a port that is not HTTP
            raise BackupFailed(f"{address} does not answer HTTP ({type(exc).__name__}: {exc}): "
                               "give the node's --http address", EXIT_UNREACHABLE) from None

    def status(self, address: str) -> dict | None:
        try:
            with self.open(address, "/status") as reply:
                doc = json.loads(reply.read(1 << 20))
                return doc if isinstance(doc, dict) else None
        except (BackupFailed, OSError, ValueError):
            return None


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        return f"HTTP {exc.code}: {json.loads(exc.read(1 << 16))['error']}"
    except (ValueError, KeyError, TypeError, OSError, HTTPException):
        return f"HTTP {exc.code} {exc.reason}"


def choose_node(http: _Http, address: str) -> str:
    """``address``, or a ready follower it names if it is the leader."""
    doc = http.status(address)
    if not doc or doc.get("role") != "leader":
        return address
    for peer in doc.get("http_peers") or []:
        peer_doc = http.status(peer)
        if peer_doc and peer_doc.get("role") == "follower" and peer_doc.get("ready"):
            return peer
    return address


def download(http: _Http, address: str, path: str, stale: bool) -> dict:
    """Fetch a backup from ``address`` into ``path`` (atomically); its header as a dict.

    BackupFailed for every failure, with nothing left at ``path`` or beside it: the node's
    (refused, broken off, not intact) and this machine's (``path`` cannot be written). The
    partial files of backups killed before they could remove theirs go first (``leftovers``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    query = "/admin/backup" + ("?stale=1" if stale else "")
    leftovers.remove_abandoned(directory, PARTIAL_PREFIX)
    try:
        fd, partial = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=directory)
    except OSError as exc:
        raise BackupFailed(f"cannot write {path}: {exc.strerror or exc}", EXIT_SERVER_ERROR)
    try:
        with os.fdopen(fd, "wb") as out:
            leftovers.hold(out.fileno())  # until it is renamed: no other backup may take it
            header = _receive(http, address, query, out)
            out.flush()
            os.fsync(out.fileno())
            os.replace(partial, path)
        fsync_dir(directory)  # the backup is said to be saved: its name must survive a crash
    except BaseException as exc:
        _unlink(partial)
        if isinstance(exc, BackupFileError):
            raise BackupFailed(f"the backup from {address} is not intact: {exc}",
                               EXIT_SERVER_ERROR) from None
        if isinstance(exc, OSError):  # the node's errors are BackupFailed by now: this is ours
            raise BackupFailed(f"cannot write {path}: {exc.strerror or exc}",
                               EXIT_SERVER_ERROR) from None
        raise
    return header.to_json()


def _receive(http: _Http, address: str, query: str, out) -> BackupHeader:
    """Copy the node's answer into ``out``, checking it as it arrives; its header."""
    reader = BackupReader()
    with http.open(address, query, "POST") as reply:
        while True:
            try:
                chunk = reply.read(CHUNK_BYTES)
            except (OSError, ValueError, HTTPException) as exc:
                # A response cut short: the node drops the connection when its backup fails,
                # and a chunked body then ends without its last chunk (IncompleteRead).
                raise BackupFailed(f"{address} broke off the backup: {exc}",
                                   EXIT_SERVER_ERROR) from None
            if not chunk:
                return reader.finish()
            reader.feed(chunk)
            out.write(chunk)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@click.command(context_settings=_HELP)
@click.argument("node", metavar="NODE")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_ADMIN_TOKEN_FILE",
              help="File holding the node's admin token (mode 0600); else $BEANRAFT_ADMIN_TOKEN.")
@click.option("--exact", is_flag=True,
              help="Back up NODE itself even if it is the leader (default: one of its followers).")
@click.option("--stale", is_flag=True,
              help="Without a leader, back up what the node has applied (may miss recent commits).")
@click.option("--tls-ca", type=click.Path(dir_okay=False), default=None, envvar="BEANRAFT_TLS_CA",
              help="The HTTP port speaks TLS: trust this CA file.")
@click.option("--timeout", type=click.FloatRange(1.0), default=60.0, show_default=True,
              help="Seconds to wait for each read from the node.")
@click.option("--json", "as_json", is_flag=True, help="Print the backup's header as JSON.")
def backup(node, file, admin_token_file, exact, stale, tls_ca, timeout, as_json):
    """Write a consistent backup of the cluster's state, taken from NODE (its --http HOST:PORT)
    without stopping it, to FILE."""
    try:
        http = _Http(auth.cli_token(admin_token_file), tls_ca, timeout)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE, as_json)
    try:
        source = node if exact else choose_node(http, node)
        header = download(http, source, file, stale)
    except BackupFailed as exc:
        _fail(str(exc), exc.status, as_json)
    header["from"] = source
    if as_json:
        click.echo(json.dumps(header, indent=2))
    else:
        click.echo(f"backup of {source} at index {header['index']} (term {header['term']}, "
                   f"{header['jobs']} jobs, {header['body_bytes']} bytes) written to {file}")


@click.command(context_settings=_HELP)
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, exists=True))
@click.option("-b", "data_dir", type=click.Path(file_okay=False), required=True,
              help="The new node's data directory (must not exist, or be empty).")
@click.option("--member", "members", multiple=True, metavar="HOST:PORT",
              help="The Raft address of a member of the new cluster; repeat for each "
                   "[default: the members of the backed-up cluster].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def restore(file, data_dir, members, as_json):
    """Seed the data directory DIR of a new cluster's node from the backup FILE.

    Restore the same FILE into every node of the new cluster, with the same --member list,
    then start the nodes with those --raft and --peer addresses."""
    try:
        summary = restore_data_dir(file, data_dir, [m for v in members for m in v.split()])
    except BackupFileError as exc:
        _fail(f"{file}: {exc}; nothing was written", EXIT_SERVER_ERROR, as_json)
    except RestoreError as exc:
        _fail(f"{exc}; nothing was written", EXIT_REFUSED, as_json)
    except OSError as exc:
        _fail(f"cannot write {data_dir}: {exc}; nothing was written", EXIT_SERVER_ERROR, as_json)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"restored {summary['jobs']} jobs ({summary['ready']} ready, {summary['delayed']} "
            f"delayed, {summary['buried']} buried; {summary['reserved_released']} reserved made "
            f"ready) into {data_dir} for the members {' '.join(summary['members'])}")


def _fail(message: str, status: int, as_json: bool):
    if as_json:
        click.echo(json.dumps({"error": message, "status": status}))
    click.echo(f"beanraft: {message}", err=True)
    sys.exit(status)


COMMANDS = (backup, restore)
