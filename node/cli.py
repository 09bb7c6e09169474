"""The ``beanraft`` command line: ``serve`` (beanstalkd's flags, plus cluster options) and friends."""

from __future__ import annotations

import logging
import os
import sys

import click

from beanraft.jobs.commands import RULES_SUPPORTED
from beanraft.replication.journal import SyncPolicy
from beanraft.replication.raft import DataDirLocked
from beanraft.replication.membership import MembershipError
from beanraft.replication.seam import SeamError
from beanraft.replication.snapshot_file import DamagedSnapshot

from beanraft.protocol import MAX_JOB_SIZE_LIMIT, is_decimal

from . import admin, auth_cli, backup_cli, gcpace, leader_cli, loops, member_cli, ops, tls
from .principals import load_auth_file
from .config import MAX_DEDUP_CAP, MAX_DEDUP_WINDOW_S, ConfigError, NodeConfig, check_private

VERSION = "0.1.0"
log = logging.getLogger("beanraft")


class _Size(click.ParamType):
    """A byte count as beanstalkd's -z and -s take it: digits only."""

    name = "BYTES"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if not is_decimal(str(value), 20):
            self.fail(f"invalid size: {value}", param, ctx)
        return int(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="beanraft")
def main() -> None:
    """BeanRaft: a highly available work queue that speaks the beanstalkd protocol."""


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-l", "listen", default="0.0.0.0", show_default=True, envvar="BEANRAFT_LISTEN",
              help="Listen on this address, or unix:/path for a unix socket.")
@click.option("-p", "port", type=click.IntRange(0, 65535), default=NodeConfig.port, show_default=True,
              envvar="BEANRAFT_PORT", help="TCP port for clients.")
@click.option("-b", "data_dir", type=click.Path(file_okay=False), default=None, envvar="BEANRAFT_DATA_DIR",
              help="Keep the Raft journal and snapshots in this directory (jobs survive restarts).")
@click.option("-f", "fsync_ms", type=click.IntRange(0), default=None,
              help="fsync at most every MS milliseconds (0: before every reply, the default).")
@click.option("-F", "no_fsync", is_flag=True, help="Never fsync (fast; a machine crash can lose jobs).")
@click.option("-z", "max_job_size", type=_Size(), default=NodeConfig.max_job_size, show_default=True,
              help="Maximum job size in bytes.")
@click.option("-s", "binlog_size", type=_Size(), default=NodeConfig.binlog_max_size, show_default=True,
              help="Accepted for compatibility; shown as binlog-max-size in stats.")
@click.option("-u", "user", default=None, help="Become this user after binding the ports.")
@click.option("-c", "compact", is_flag=True, hidden=True)
@click.option("-n", "no_compact", is_flag=True, hidden=True)
@click.option("-V", "verbose", count=True, help="More log output (repeat for more).")
@click.option("-v", "show_version", is_flag=True, help="Print the version and exit.")
@click.option("--raft", default=None, envvar="BEANRAFT_RAFT", metavar="HOST:PORT",
              help="This node's Raft address (cluster mode). Only this address is bound.")
@click.option("--peer", "peers", multiple=True, envvar="BEANRAFT_PEERS", metavar="HOST:PORT",
              help="Raft address of another member; repeat for each (env: space-separated).")
@click.option("--join", default=None, envvar="BEANRAFT_JOIN", metavar="HOST:PORT",
              help="Join a running cluster: the HTTP address of any member. The node starts "
              "empty and becomes a member once 'beanraft member add' adds it.")
@click.option("--http", default=None, envvar="BEANRAFT_HTTP", metavar="HOST:PORT",
              help="Serve /status, /healthz, /readyz and /metrics here.")
@click.option("--cluster-secret-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_CLUSTER_SECRET_FILE", help="File holding the shared cluster secret.")
@click.option("--insecure", is_flag=True, envvar="BEANRAFT_INSECURE",
              help="Allow a cluster without a secret (Raft traffic unauthenticated).")
@click.option("--commit-timeout", type=click.FloatRange(0.5), default=NodeConfig.commit_timeout_s, show_default=True,
              envvar="BEANRAFT_COMMIT_TIMEOUT", help="Seconds a command waits for a leader before "
              "its connection is closed with the outcome unknown.")
@click.option("--node-grace", type=click.FloatRange(0.5), default=NodeConfig.node_grace_s, show_default=True,
              envvar="BEANRAFT_NODE_GRACE", help="Seconds before the leader releases the jobs "
              "reserved through a node it cannot reach.")
@click.option("--snapshot-entries", type=click.IntRange(100), default=NodeConfig.snapshot_entries, show_default=True,
              envvar="BEANRAFT_SNAPSHOT_ENTRIES", help="Snapshot and compact the journal after this "
              "many log entries (one entry is one batch of commands).")
@click.option("--snapshot-bytes", type=_Size(), default=NodeConfig.snapshot_bytes, show_default=True,
              envvar="BEANRAFT_SNAPSHOT_BYTES", help="Snapshot and compact the journal once it "
              "holds this many bytes of commands (and half the estimated snapshot size).")
@click.option("--dedup-window", type=click.IntRange(1, MAX_DEDUP_WINDOW_S),
              default=NodeConfig.dedup_window_s, show_default=True,
              envvar="BEANRAFT_DEDUP_WINDOW", help="Seconds a put-key key is remembered: the same "
              "key again within this window answers the first job's id and creates nothing.")
@click.option("--dedup-cap", type=click.IntRange(1, MAX_DEDUP_CAP), default=NodeConfig.dedup_cap,
              show_default=True, envvar="BEANRAFT_DEDUP_CAP", help="Most put-key keys remembered; "
              "past it the oldest are forgotten first (about 280 bytes of memory per key).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, envvar="BEANRAFT_TLS_CERT",
              help="PEM certificate chain: serve TLS on the client port and the HTTP port.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, envvar="BEANRAFT_TLS_KEY",
              help="PEM private key of --tls-cert (mode 0600). Both are re-read on SIGHUP.")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_TLS_CLIENT_CA", help="PEM CA bundle: require client certificates "
              "issued by it (mutual TLS).")
@click.option("--tls-handshake-timeout", type=click.FloatRange(0.1),
              default=NodeConfig.tls_handshake_timeout_s, show_default=True,
              envvar="BEANRAFT_TLS_HANDSHAKE_TIMEOUT", help="Seconds a client has to finish the "
              "TLS handshake before its connection is closed.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_ADMIN_TOKEN_FILE",
              help="File holding the bearer token of the mutating HTTP endpoints (mode 0600).")
@click.option("--http-read-token-required", is_flag=True, envvar="BEANRAFT_HTTP_READ_TOKEN_REQUIRED",
              help="The HTTP reads (/status, /healthz, /readyz, /metrics, /api) need the admin "
              "token too; the dashboard's page still loads and asks for it.")
@click.option("--auth-file", type=click.Path(dir_okay=False), default=None,
              envvar="BEANRAFT_AUTH_FILE", help="TOML file of principals, their token hashes and "
              "tube rights (mode 0600): clients must authenticate. Re-read on SIGHUP.")
@click.option("--peer-http", "peer_http", multiple=True, envvar="BEANRAFT_PEER_HTTP", metavar="HOST:PORT",
              help="The HTTP address of another node, for the dashboard's failover (repeatable).")
@click.option("--max-rules", type=click.IntRange(1, RULES_SUPPORTED), default=RULES_SUPPORTED,
              show_default=True, envvar="BEANRAFT_MAX_RULES", help="The highest rules version "
              "this node agrees to. 1 holds the cluster at the rules of BeanRaft before rules "
              "versions, so that a downgrade to it stays possible.")
@click.option("--event-loop", "event_loop", type=click.Choice(loops.CHOICES), default="auto",
              show_default=True, envvar="BEANRAFT_EVENT_LOOP",
              help="The client port's event loop: auto (uvloop, a dependency, when it can be "
              "imported, else asyncio's own), uvloop (insists on it), or asyncio.")
def serve(listen, port, data_dir, fsync_ms, no_fsync, max_job_size, binlog_size, user, compact,
          no_compact, verbose, show_version, raft, peers, join, http, cluster_secret_file,
          insecure, commit_timeout, node_grace, snapshot_entries, snapshot_bytes, dedup_window,
          dedup_cap, tls_cert, tls_key, tls_client_ca, tls_handshake_timeout, admin_token_file,
          http_read_token_required, auth_file, peer_http, max_rules, event_loop):
    """Run one BeanRaft node (flags as beanstalkd 1.12's, plus the cluster options)."""
    if show_version:
        click.echo(f"beanraft {VERSION}")
        return
    if compact or no_compact:
        click.echo(f"-{'c' if compact else 'n'} flag was removed. binlog is always compacted.", err=True)
    _setup_logging(verbose)
    config = build_config(
        listen=listen, port=port, data_dir=data_dir, fsync_ms=fsync_ms, no_fsync=no_fsync,
        max_job_size=max_job_size, binlog_size=binlog_size, user=user, raft=raft, peers=peers,
        join=join,
        http=http, cluster_secret_file=cluster_secret_file, insecure=insecure,
        commit_timeout=commit_timeout, node_grace=node_grace, snapshot_entries=snapshot_entries,
        snapshot_bytes=snapshot_bytes, dedup_window=dedup_window, dedup_cap=dedup_cap,
        tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        tls_handshake_timeout=tls_handshake_timeout,
        admin_token_file=admin_token_file, http_read_token_required=http_read_token_required,
        auth_file=auth_file, peer_http=peer_http, max_rules=max_rules)
    try:
        code = loops.run(lambda: _serve(config), event_loop)
    except loops.LoopUnavailable as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


def build_config(*, listen, port, data_dir, fsync_ms, no_fsync, max_job_size, binlog_size, user,
                 raft, peers, http, cluster_secret_file, insecure, commit_timeout, node_grace,
                 snapshot_entries=NodeConfig.snapshot_entries, snapshot_bytes=NodeConfig.snapshot_bytes,
                 dedup_window=NodeConfig.dedup_window_s, dedup_cap=NodeConfig.dedup_cap,
                 tls_cert=None, tls_key=None, tls_client_ca=None,
                 tls_handshake_timeout=NodeConfig.tls_handshake_timeout_s, admin_token_file=None, peer_http=(),
                 http_read_token_required=False, auth_file=None, join=None,
                 max_rules=RULES_SUPPORTED, **_ignored) -> NodeConfig:
    """A validated NodeConfig from ``serve``'s parameters (raises click.UsageError)."""
    if max_job_size > MAX_JOB_SIZE_LIMIT:
        log.warning("maximum job size was set to %d", MAX_JOB_SIZE_LIMIT)
        max_job_size = MAX_JOB_SIZE_LIMIT
    sync = SyncPolicy("always")
    if no_fsync:
        sync = SyncPolicy("never")
    elif fsync_ms:
        sync = SyncPolicy("interval", fsync_ms)
    if len(peers) == 1 and " " in peers[0]:
        peers = tuple(peers[0].split())
    config = NodeConfig(
        listen=listen, port=port, data_dir=data_dir, sync=sync, max_job_size=max_job_size,
        binlog_max_size=binlog_size, user=user, raft=raft, peers=list(peers), join=join, http=http,
        secret=_read_secret(cluster_secret_file), insecure=insecure,
        commit_timeout_s=commit_timeout, node_grace_s=node_grace,
        snapshot_entries=snapshot_entries, snapshot_bytes=snapshot_bytes,
        dedup_window_s=dedup_window, dedup_cap=dedup_cap, tls_cert=tls_cert, tls_key=tls_key,
        tls_client_ca=tls_client_ca, tls_handshake_timeout_s=tls_handshake_timeout,
        admin_token=_read_secret(admin_token_file, "--admin-token-file", None),
        http_read_token_required=http_read_token_required,
        auth_file=auth_file, peer_http=[a for a in _split(peer_http) if a != http],
        max_rules=max_rules)
    try:
        config.validate()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _check_tls(config)
    if auth_file:
        try:
            load_auth_file(auth_file)  # a bad file stops serve with a usage error
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    return config


async def _serve(config: NodeConfig) -> int:
    from .app import Node

    # Everything the node writes (journal, snapshots, term and vote, lock, and whatever
    # pysyncobj creates) holds job bodies or cluster state: owner only, 0600 and 0700.
    os.umask(0o077)
    _raise_open_files_limit()
    gcpace.install()  # full passes of the cycle collector from the node's timer (gcpace.py)
    log.info("event loop: %s", loops.running_loop_name())
    node = Node(config)
    try:
        await node.start()
    except DataDirLocked as exc:
        log.error("%s", exc)
        return 10
    except SeamError as exc:
        log.error("cannot start: %s", exc)
        return 70  # EX_SOFTWARE: this build does not fit the installed pysyncobj
    except MembershipError as exc:
        log.error("cannot start: %s", exc)
        return 78  # EX_CONFIG
    except DamagedSnapshot as exc:
        log.error("cannot start: %s", exc)
        return 74  # EX_IOERR
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 111
    if config.user:
        _become(config.user, config.data_dir)
    await node.serve_forever()
    return 0


def _split(values) -> list[str]:
    """Repeated flags, or one environment variable holding several addresses."""
    return [word for value in values for word in value.split()]


def _read_secret(path: str | None, flag: str = "--cluster-secret-file",
                 env: str | None = "BEANRAFT_CLUSTER_SECRET") -> str | None:
    if path:
        try:
            with open(path) as f:
                _check_private(path, os.fstat(f.fileno()).st_mode, flag)
                secret = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise click.UsageError(f"cannot read {flag} {path}: {reason}") from None
        if not secret:
            raise click.UsageError(f"{path} is empty")
        return secret
    return (os.environ.get(env) or None) if env else None


def _check_private(path: str, mode: int, flag: str = "--cluster-secret-file") -> None:
    try:
        check_private(flag, path, mode)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _check_tls(config: NodeConfig) -> None:
    """Load the TLS files once now, so a bad one stops ``serve`` with a usage error."""
    if config.tls_cert:
        try:
            tls.server_context(config.tls_cert, config.tls_key, config.tls_client_ca)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except OSError as exc:
            raise click.UsageError(f"cannot load the TLS files: {tls.describe(exc)}") from None


def _become(user: str, data_dir: str | None) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        log.error("getpwnam(\"%s\"): no such user", user)
        sys.exit(33)
    if data_dir:
        _chown_tree(data_dir, entry.pw_uid, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def _chown_tree(path: str, uid: int, gid: int) -> None:
    """Give the data directory to the user we become, so snapshots can still be written."""
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in files:
            os.chown(os.path.join(root, name), uid, gid)


def _raise_open_files_limit() -> None:
    """Thousands of client connections need more than the usual 1024 descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.debug("cannot raise the open files limit", exc_info=True)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("pysyncobj").setLevel(logging.WARNING)


for _command in (ops.cluster, ops.status, ops.secret, auth_cli.auth, *admin.COMMANDS,
                 leader_cli.leader, *backup_cli.COMMANDS, member_cli.member):
    main.add_command(_command)

if __name__ == "__main__":
    main()
