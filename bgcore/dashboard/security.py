"""Who may use the dashboard, and proof that an action came from its own pages.

- **Authentication**: with ``dashboard_password`` set, every request (pages,
  fragments, actions, static files, ``/metrics``) needs HTTP basic
  authentication with that password (any user name). Without it the dashboard
  listens on loopback only (:mod:`bgcore.dashboard.settings`) and is open.
- **CSRF**: actions are POSTs and carry a token (form field ``csrf_token`` or
  header ``X-CSRF-Token``) that must equal the ``bgcore_csrf`` cookie (the
  double-submit cookie pattern: another origin can make a browser send the
  cookie, but cannot read it to put it in the form). The cookie is random,
  ``HttpOnly`` and ``SameSite=Strict``. A POST whose ``Origin`` header names
  another host is refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

CSRF_COOKIE = "bgcore_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
NEW_TOKEN = "bgcore.new_csrf"  # scope key: a token made for this request, set as the cookie on its response
REALM = 'Basic realm="bgcore dashboard", charset="UTF-8"'

Next = Callable[[Request], Awaitable[Response]]


def authorized(request: Request, password: str | None) -> bool:
    """Whether ``request`` may see the dashboard: no password set, or basic auth with the password."""
    if password is None:
        return True
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        _user, _, given = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), password.encode())


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one the response will set."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 32:
        token = request.scope.setdefault(NEW_TOKEN, secrets.token_urlsafe(32))
    return token


def csrf_refusal(request: Request, submitted: str | None) -> str | None:
    """Why a POST is refused (one line), or None when its token and origin are good."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return f"refused: the request came from another site ({origin}); use the dashboard's own buttons"
    cookie = request.cookies.get(CSRF_COOKIE)
    given = submitted or request.headers.get(CSRF_HEADER)
    if not cookie or not given or not hmac.compare_digest(cookie.encode(), given.encode()):
        return "refused: missing or wrong CSRF token; reload the page and use its buttons again"
    return None


def middleware(password: str | None) -> Callable[[Request, Next], Awaitable[Response]]:
    """The HTTP middleware: authentication first, then the CSRF cookie on the way out."""

    async def check(request: Request, call_next: Next) -> Response:
        if not authorized(request, password):
            return PlainTextResponse("authentication required: the bench's dashboard_password", status_code=401,
                                     headers={"WWW-Authenticate": REALM})
        response = await call_next(request)
        new = request.scope.get(NEW_TOKEN)
        if new:
            response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", path="/")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return check
