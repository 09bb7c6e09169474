"""Which HTTP requests need a token, and where the CLI finds the admin token.

Theory of operation.
* Credentials are judged in one place for both ports, ``principals.Authenticator``: the
  ``--admin-token-file`` token is its built-in principal ``admin-token``, and every principal of
  ``--auth-file`` is accepted as ``Bearer <principal>:<token>``.
* Which requests need the token (``needs_token``): every mutating request (any method but GET,
  HEAD and OPTIONS), every request under ``/admin/`` whatever its method (a backup reads every
  job body), and, with ``--http-read-token-required``, every read but the dashboard's own static
  files, which hold no data (the page then sends the token with its reads).
* The CLI reads the token from ``--admin-token-file`` (mode 0600, as ``serve`` requires) or the
  ``BEANRAFT_ADMIN_TOKEN`` environment variable (``cli_token``).
"""

from __future__ import annotations

import os

READ_METHODS = ("GET", "HEAD", "OPTIONS")
ADMIN_PREFIX = "/admin/"
TOKEN_ENV = "BEANRAFT_ADMIN_TOKEN"


def needs_token(method: str, path: str, reads_closed: bool) -> bool:
    """Whether a request must carry the token (see the module docstring)."""
    if method not in READ_METHODS or path.startswith(ADMIN_PREFIX):
        return True
    if not reads_closed or method == "OPTIONS":
        return False
    return not (path == "/" or path.startswith("/dashboard/"))


def cli_token(token_file: str | None) -> str | None:
    """The token the CLI sends: from ``token_file``, else from $BEANRAFT_ADMIN_TOKEN, else None.

    Raises ValueError with a message for a file that is unreadable, empty or readable by others.
    """
    if token_file:
        try:
            with open(token_file) as f:
                if os.fstat(f.fileno()).st_mode & 0o077:
                    raise ValueError(f"{token_file} is accessible by group or others: "
                                     f"chmod 600 {token_file}")
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise ValueError(f"cannot read the admin token file {token_file}: {reason}") from None
        if not token:
            raise ValueError(f"the admin token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None
