"""Openers for the HTTP requests that carry a token (the CLI's, and ``serve --join``'s).

Theory of operation. urllib follows a 301, 302, 303, 307 or 308 answer by sending the request
again, with its headers, ``Authorization`` among them, to whatever URL the answer's ``Location``
names: another host, another port, plain HTTP. A node never answers a redirect, so one comes
from something else at that address (a hostile service, a misconfigured front end). The openers
made here refuse to follow it: the request fails with ``RedirectRefused``, an ``HTTPError`` whose
reason says so, and the token never leaves for the address the redirect names. Being an
``HTTPError``, it takes the path of any other unexpected answer in the callers that do not look
for it by name.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request


class RedirectRefused(urllib.error.HTTPError):
    """The answer was a redirect, which was not followed (see the module docstring)."""

    def __init__(self, request: urllib.request.Request, fp, code: int, msg: str, headers):
        self.location = headers.get("Location") or headers.get("URI") or "nowhere"
        reason = (f"answered HTTP {code} {msg}, a redirect to {self.location}: not followed, as "
                  "a node never redirects (the token was not sent there)")
        super().__init__(request.full_url, code, reason, headers, fp)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Stands in for urllib's HTTPRedirectHandler, which ``build_opener`` adds otherwise."""

    def http_error_302(self, req, fp, code, msg, headers):
        raise RedirectRefused(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def opener(context: ssl.SSLContext | None = None,
           proxies: bool = False) -> urllib.request.OpenerDirector:
    """An opener that never follows a redirect; it bypasses any proxy unless ``proxies``, and
    speaks HTTPS with ``context`` when given."""
    handlers: list = [_RefuseRedirects()]
    if not proxies:
        handlers.append(urllib.request.ProxyHandler({}))
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)
