"""Addresses of the nodes: ``("host", port)``, ``"host:port"``, a list of them, or the
environment variable ``BEANRAFT_ADDRESSES`` (comma-separated ``host:port``)."""

from __future__ import annotations

import os
import ssl
from typing import Iterable, Union

from beanraft import protocol as p

Address = tuple[str, int]
AddressLike = Union[Address, str, Iterable[Union[Address, str]], None]
TlsLike = Union[ssl.SSLContext, bool, None]

ENV_VAR = "BEANRAFT_ADDRESSES"
DEFAULT_PORT = 11300


def _one(value: Union[Address, str]) -> Address:
    if isinstance(value, tuple):
        host, port = value
        return str(host), int(port)
    text = value.strip()
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if not host:
        raise ValueError(f"not an address: {value!r} (expected host:port)")
    if port and not p.is_decimal(port, 5):
        raise ValueError(f"not a port in {value!r}")
    return host, int(port) if port else DEFAULT_PORT


def parse_addresses(value: AddressLike) -> list[Address]:
    """The list of (host, port) for any accepted form; None reads ``BEANRAFT_ADDRESSES``."""
    if value is None:
        env = os.environ.get(ENV_VAR, "")
        if not env.strip():
            raise ValueError(f"no address given and {ENV_VAR} is not set")
        value = [part for part in env.split(",") if part.strip()]
    if isinstance(value, (str, tuple)):
        value = [value]
    addresses = [_one(item) for item in value]
    if not addresses:
        raise ValueError("no address given")
    return addresses


def describe(address: Address | None) -> str:
    if address is None:
        return "-"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_context(tls: TlsLike) -> ssl.SSLContext | None:
    """The context to connect with: ``True`` is the system's default (it verifies the node's
    certificate and name against the system CAs); None or False is plaintext."""
    if tls is True:
        return ssl.create_default_context()
    if tls is None or tls is False:
        return None
    if not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext, True or None, not {type(tls).__name__}")
    return tls
