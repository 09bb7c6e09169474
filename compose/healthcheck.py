#!/opt/beanraft/bin/python
"""The container's health check: exit 0 when this node's GET /readyz answers 200, else 1.

A node is ready when it knows a leader and has applied everything up to the commit index. The
address is the node's own --http setting (BEANRAFT_HTTP); a wildcard bind is asked on loopback.
With an admin token file (BEANRAFT_ADMIN_TOKEN_FILE), the token is sent, so the check works on a
node started with --http-read-token-required too.
"""

import os
import sys
import urllib.error
import urllib.request

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def readyz_url(http: str) -> str:
    """The /readyz URL for a HOST:PORT as given to --http."""
    host, _, port = http.rpartition(":")
    if host in WILDCARDS:
        host = "127.0.0.1"
    return f"http://{host}:{port}/readyz"


def admin_token() -> str | None:
    path = os.environ.get("BEANRAFT_ADMIN_TOKEN_FILE")
    try:
        with open(path) as f:
            return f.read().strip() or None
    except (OSError, TypeError):
        return None


def main() -> int:
    url = readyz_url(os.environ.get("BEANRAFT_HTTP", "127.0.0.1:8301"))
    request = urllib.request.Request(url)
    token = admin_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"{url}: {error}")
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
