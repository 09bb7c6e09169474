"""Principals, their tokens and their rights: the auth file, and the one check both ports use
(``auth.py`` says which HTTP requests need it).

Theory of operation.
* The auth file (``--auth-file``, TOML, mode 0600 like the cluster secret) names principals.
  Each has a token stored as a salted scrypt hash (``beanraft auth hash-token`` makes one; the
  token itself is never stored), optionally the subject of a mutual-TLS client certificate that
  names it instead of a token, and three lists of tube patterns -- exact names or shell-style
  globs (``*``, ``?``, ``[...]``): ``produce``, ``consume`` and ``administer``. The format is in
  docs/reference/auth-file.md; what each right allows, command by command, is in ``rights.py``.
* ``Authenticator`` holds the loaded file. ``reload`` (SIGHUP) reads it again; a file that does
  not load logs one ERROR line and the previous principals stay. Connections look their
  principal up by name for every command, so a reload applies to the next command at once, and
  a principal removed from the file can do nothing more.
* A token is checked by hashing it with the principal's salt and comparing the digests with
  ``hmac.compare_digest`` (constant time). An unknown principal is checked against a dummy hash,
  so the answer takes as long as for a known one. The hashing runs in a worker thread: scrypt
  takes tens of milliseconds and must not stall the event loop.
* Failed authentications are counted (``failures``, exported on /metrics), logged as one WARNING
  line each with the principal (when it exists) and the peer's address, and slowed down per peer
  address: every failure doubles the time that address must wait before its next attempt is
  checked (``FAIL_DELAY_S`` up to ``FAIL_DELAY_MAX_S``), and attempts it makes in parallel, on
  many connections, take turns one such wait apart, as attempts one after another do; an
  attempt whose client hung up while it waited is given up, and gives its turn back. The table
  of addresses is bounded (``MAX_TRACKED_PEERS``, least recently failed dropped first); an
  address whose last failure is older than ``FAIL_FORGET_S`` starts afresh.
* ``--admin-token-file`` is part of the same mechanism: its token is the token of a built-in
  principal ``ADMIN_TOKEN_PRINCIPAL`` that administers every tube (no hash: the operator gave
  the token itself, and it is compared in constant time). An admin principal of the auth file
  authenticates the HTTP mutations with ``Authorization: Bearer <principal>:<token>``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass, field
from typing import Callable

from beanraft import protocol as p

from .config import ConfigError, check_private

log = logging.getLogger("beanraft.auth")

#: scrypt's cost: 2**14 rounds of 8-block mixing, 16 MiB of memory, about 50 ms per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
TOKEN_BYTES = 32  # of a token made by ``beanraft auth new-token``: 256 bits
HASH_PREFIX = "scrypt"
ADMIN_TOKEN_PRINCIPAL = "admin-token"
RIGHTS = ("produce", "consume", "administer")
MAX_PATTERNS = 1000  # per right of one principal
MAX_PRINCIPALS = 10_000
FAIL_DELAY_S = 0.1
FAIL_DELAY_MAX_S = 5.0
FAIL_FORGET_S = 600.0
MAX_TRACKED_PEERS = 4096


def _delay_s(failures: int) -> float:
    """The back-off after ``failures`` failed authentications in a row from one address."""
    return min(FAIL_DELAY_S * 2 ** (failures - 1), FAIL_DELAY_MAX_S)


def hash_token(token: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p_: int = SCRYPT_P,
               salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64) for ``token``: what the auth file stores."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(token.encode(), salt, n, r, p_)
    return "$".join([HASH_PREFIX, str(n), str(r), str(p_), _b64(salt), _b64(digest)])


def new_token() -> str:
    """A fresh random token (URL-safe base64, no spaces: it fits the ``auth`` command)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(token: bytes, salt: bytes, n: int, r: int, p_: int) -> bytes:
    return hashlib.scrypt(token, salt=salt, n=n, r=r, p=p_, maxmem=SCRYPT_MAXMEM, dklen=32)


@dataclass(frozen=True)
class StoredHash:
    """A parsed ``scrypt$...`` string."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> StoredHash:
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != HASH_PREFIX:
            raise ValueError("not a scrypt$N$r$p$salt$hash string (make one with 'beanraft auth "
                             "hash-token')")
        n, r, p_ = (int(part) for part in parts[1:4])
        if n < 2 or n & (n - 1) or not 0 < r <= 64 or not 0 < p_ <= 16 or 128 * r * n > SCRYPT_MAXMEM:
            raise ValueError("scrypt parameters out of range")
        return cls(n, r, p_, base64.b64decode(parts[4], validate=True),
                   base64.b64decode(parts[5], validate=True))

    def matches(self, token: str) -> bool:
        """Hash ``token`` with this salt and compare in constant time."""
        return hmac.compare_digest(_scrypt(token.encode(), self.salt, self.n, self.r, self.p),
                                   self.digest)


_DUMMY = StoredHash.parse(hash_token("no principal has this token", salt=b"\0" * SALT_BYTES))


@dataclass(frozen=True)
class Principal:
    """One named principal and the tube patterns of each of its rights."""

    name: str
    token: StoredHash | None = None
    plain_token: str | None = field(default=None, repr=False)  # the --admin-token-file token
    tls_subject: str | None = None
    produce: tuple[str, ...] = ()
    consume: tuple[str, ...] = ()
    administer: tuple[str, ...] = ()

    def may(self, right: str, tube: str) -> bool:
        """True if one of ``right``'s patterns matches ``tube`` (case-sensitive)."""
        return any(fnmatch.fnmatchcase(tube, pattern) for pattern in getattr(self, right))

    def may_see(self, tube: str) -> bool:
        """A tube is visible to a principal holding any right on it."""
        return any(self.may(right, tube) for right in RIGHTS)

    def token_matches(self, token: str) -> bool:
        if self.plain_token is not None:
            return hmac.compare_digest(self.plain_token.encode(), token.encode())
        return (self.token or _DUMMY).matches(token) and self.token is not None


def load_auth_file(path: str) -> dict[str, Principal]:
    """The principals of ``path``; raises ConfigError with a one-line reason."""
    try:
        with open(path, "rb") as f:
            check_private("--auth-file", path, os.fstat(f.fileno()).st_mode)
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read --auth-file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--auth-file {path} is not TOML: {exc}") from None
    table = document.get("principal")
    if not isinstance(table, dict) or set(document) - {"principal"}:
        raise ConfigError(f"--auth-file {path}: expected [principal.<name>] tables only")
    if len(table) > MAX_PRINCIPALS:
        raise ConfigError(f"--auth-file {path}: more than {MAX_PRINCIPALS} principals")
    principals = {}
    for name, entry in table.items():
        try:
            principals[name] = _principal(name, entry)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--auth-file {path}: principal {name!r}: {exc}") from None
    subjects = [pr.tls_subject for pr in principals.values() if pr.tls_subject]
    if len(subjects) != len(set(subjects)):
        raise ConfigError(f"--auth-file {path}: two principals name the same tls-subject")
    return principals


_KEYS = {"token-hash", "tls-subject", *RIGHTS}


def _principal(name: str, entry) -> Principal:
    if not p.is_valid_principal(name.encode("ascii", "replace")):
        raise ValueError("a name is 1-64 of A-Z a-z 0-9 _ . @ -")
    if name == ADMIN_TOKEN_PRINCIPAL:
        raise ValueError("this name is the --admin-token-file's principal")
    if not isinstance(entry, dict) or set(entry) - _KEYS:
        raise ValueError(f"unknown keys {sorted(set(entry) - _KEYS)}; allowed: {sorted(_KEYS)}")
    token = entry.get("token-hash")
    subject = entry.get("tls-subject")
    if token is None and subject is None:
        raise ValueError("needs token-hash or tls-subject (or both)")
    rights = {}
    for right in RIGHTS:
        patterns = entry.get(right, [])
        if not isinstance(patterns, list) or not all(isinstance(x, str) and x for x in patterns):
            raise ValueError(f"{right} must be a list of tube names or patterns")
        if len(patterns) > MAX_PATTERNS:
            raise ValueError(f"{right} has more than {MAX_PATTERNS} patterns")
        rights[right] = tuple(patterns)
    if subject is not None and not isinstance(subject, str):
        raise ValueError("tls-subject must be a string such as \"CN=worker,O=Example\"")
    return Principal(name, StoredHash.parse(token) if token is not None else None,
                     tls_subject=subject, **rights)


def subject_of(peercert: dict | None) -> str | None:
    """A client certificate's subject as ``CN=...,O=...`` (the certificate's own order)."""
    if not peercert or not peercert.get("subject"):
        return None
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
             "emailAddress": "emailAddress", "domainComponent": "DC"}
    return ",".join(f"{short.get(key, key)}={value}"
                    for rdn in peercert["subject"] for key, value in rdn)


class Authenticator:
    """The principals in force, the failure table and the failure counter."""

    def __init__(self, path: str | None, admin_token: str | None = None):
        self.path = path
        self.admin = (Principal(ADMIN_TOKEN_PRINCIPAL, plain_token=admin_token, administer=("*",))
                      if admin_token else None)
        self.principals: dict[str, Principal] = {}
        self.by_subject: dict[str, Principal] = {}
        self.failures = 0
        # peer -> (failures in a row, when the last one was, attempts waiting for their turn)
        self._peers: collections.OrderedDict[str, tuple[int, float, int]] = collections.OrderedDict()
        self._lock = threading.Lock()  # the HTTP thread fails authentications too
        if path is not None:
            self._install(load_auth_file(path))
        elif self.admin is not None:
            self._install({})

    @property
    def required(self) -> bool:
        """True when the client port demands authentication (an auth file is in force)."""
        return self.path is not None

    def _install(self, principals: dict[str, Principal]) -> None:
        if self.admin is not None:
            principals[ADMIN_TOKEN_PRINCIPAL] = self.admin
        self.principals = principals
        self.by_subject = {pr.tls_subject: pr for pr in principals.values() if pr.tls_subject}

    def reload(self) -> bool:
        """Read the auth file again (SIGHUP); on failure keep the principals in force."""
        if self.path is None:
            return False
        try:
            principals = load_auth_file(self.path)
        except ConfigError as exc:
            log.error("auth file not reloaded, the previous principals stay in force: %s", exc)
            return False
        self._install(principals)
        log.info("auth file %s reloaded: %d principals; new commands follow it", self.path,
                 len(principals))
        return True

    def get(self, name: str | None) -> Principal | None:
        """The principal called ``name`` as the file now says (None once it is removed)."""
        return self.principals.get(name) if name is not None else None

    def by_certificate(self, peercert: dict | None) -> Principal | None:
        subject = subject_of(peercert)
        return self.by_subject.get(subject) if subject else None

    def check(self, name: str, token: str) -> Principal | None:
        """The principal if ``token`` is its token (blocking: scrypt runs here)."""
        principal = self.principals.get(name)
        if principal is None:
            _DUMMY.matches(token)  # as long as a real check: no timing tells names apart
            return None
        return principal if principal.token_matches(token) else None

    async def authenticate(self, name: str, token: str, peer: str) -> Principal | None:
        """``check`` in a worker thread, after this peer's back-off; a failure is counted,
        logged and makes the peer's next attempt wait longer."""
        return await self._attempt(peer, name, lambda: self.check(name, token))

    async def _attempt(self, peer: str, name: str,
                       check: Callable[[], Principal | None]) -> Principal | None:
        """``check`` in a worker thread at this attempt's turn (``_turn``); a failure is counted
        there, so an attempt whose client left meanwhile (given up) still counts."""
        def checked() -> Principal | None:
            principal = check()
            if principal is None:
                self.failed(name if name in self.principals else None, peer)
            return principal

        async with self._turn(peer):
            return await asyncio.to_thread(checked)

    def failed(self, name: str | None, peer: str) -> None:
        """Count, log and remember one failed authentication from ``peer``."""
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            count, last, waiting = self._peers.pop(peer, (0, now, 0))
            count = 1 if now - last > FAIL_FORGET_S else count + 1
            self._peers[peer] = (count, now, waiting)
            while len(self._peers) > MAX_TRACKED_PEERS:
                self._peers.popitem(last=False)
        log.warning("authentication failed for %s from %s (%d in a row from this address)",
                    f"principal {name}" if name else "an unknown principal", peer, count)

    def _wait_s(self, peer: str) -> float:
        """How long a single attempt from ``peer`` would wait now (its failures' back-off)."""
        with self._lock:
            count, last, _waiting = self._peers.get(peer, (0, 0.0, 0))
        if not count:
            return 0.0
        return max(0.0, last + _delay_s(count) - time.monotonic())

    @contextlib.asynccontextmanager
    async def _turn(self, peer: str):
        """Wait for this attempt's turn, then check it inside the block. After failures from the
        address, each attempt waits its back-off, plus one back-off for every attempt from the
        same address already waiting: attempts made at once on many connections are checked
        one back-off apart, as attempts one after another are. An attempt given up (its client
        hung up, ``Guard.abandon``) gives its turn back."""
        now = time.monotonic()
        wait_s, queued = 0.0, False
        with self._lock:
            count, last, waiting = self._peers.get(peer, (0, 0.0, 0))
            if count and now - last <= FAIL_FORGET_S:
                wait_s = max(0.0, last + _delay_s(count) * (waiting + 1) - now)
                self._peers[peer] = (count, last, waiting + 1)
                queued = True
        try:
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            yield
        finally:
            if queued:
                with self._lock:
                    entry = self._peers.get(peer)
                    if entry is not None and entry[2] > 0:
                        self._peers[peer] = (entry[0], entry[1], entry[2] - 1)

    async def authenticate_bearer(self, header: str, peer: str) -> Principal | None:
        """``bearer`` as ``authenticate`` does it: after the back-off, in a worker thread,
        a failure counted and logged."""
        name = header.partition(" ")[2].partition(":")[0]
        return await self._attempt(peer, name, lambda: self.bearer(header))

    def bearer(self, header: str) -> Principal | None:
        """The principal of an HTTP ``Authorization`` header (blocking), or None:
        ``Bearer <principal>:<token>``, or ``Bearer <token>`` for the --admin-token-file."""
        scheme, _, credentials = header.partition(" ")
        if scheme != "Bearer" or not credentials:
            return None
        name, sep, token = credentials.partition(":")
        if sep and p.is_valid_principal(name.encode("ascii", "replace")) and name in self.principals:
            return self.check(name, token)
        if self.admin is not None and self.admin.token_matches(credentials):
            return self.admin
        return None
