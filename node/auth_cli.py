"""``beanraft auth new-token|hash-token|check``: make tokens, hash them for the auth file, check a file."""

from __future__ import annotations

import sys

import click

from beanraft import protocol as p

from . import principals as authlib
from .config import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def auth() -> None:
    """Tokens and the auth file of --auth-file (docs/how-to/principals.md)."""


@auth.command("new-token")
def new_token() -> None:
    """Print a fresh random token (256 bits). Give it to the client; store only its hash."""
    click.echo(authlib.new_token())


@auth.command("hash-token")
@click.option("--token-file", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="Read the token from this file ('-': standard input).")
def hash_token(token_file: str) -> None:
    """Print the salted scrypt hash of a token, for token-hash in the auth file."""
    with click.open_file(token_file) as f:
        token = f.readline().strip()
    if not token or len(token) > p.MAX_TOKEN_LEN or not all(0x21 <= ord(c) < 0x7F for c in token):
        raise click.UsageError(f"a token is 1-{p.MAX_TOKEN_LEN} printable ASCII characters "
                               "without spaces")
    click.echo(authlib.hash_token(token))


@auth.command("check")
@click.argument("auth_file", type=click.Path(dir_okay=False))
def check(auth_file: str) -> None:
    """Load an auth file as serve would and list its principals and their rights."""
    try:
        principals = authlib.load_auth_file(auth_file)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for principal in principals.values():
        how = " and ".join(
            what for what, present in (("token", principal.token is not None),
                                       (f"certificate {principal.tls_subject}",
                                        principal.tls_subject is not None)) if present)
        click.echo(f"{principal.name} ({how})")
        for right in authlib.RIGHTS:
            patterns = getattr(principal, right)
            if patterns:
                click.echo(f"  {right}: {' '.join(patterns)}")
