"""Who is asking, for the operator's pages and API.

- The API takes ``Authorization: Bearer <adminToken>`` only (no cookie: nothing for a
  forged cross-site request to ride on).
- The dashboard takes the same Bearer token, or the session a person gets by signing in at
  ``/admin/login`` with their name and the token: a cookie (HttpOnly, SameSite=Strict,
  Secure behind https) holding their name, an expiry and a CSRF token, signed with a key
  derived from the admin token (so changing the token signs everyone out, and every
  instance sharing the token accepts the session). Each form posts the CSRF token back;
  a POST whose Origin (or Referer) names another site is refused whatever it carries.
  Signing out revokes the session: its id is kept in the database until it would expire,
  and every instance refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode, urlsplit

from fastapi import Request

from ..config import Settings
from ..pool import CallbackPool
from .clients import client_address
from .errors import Forbidden, NotAuthenticated
from .headers import origin

log = logging.getLogger("callbackpool.web.auth")

SESSION_COOKIE = "callbackpool_admin"
MAX_NAME_CHARS = 100


class LoginRequired(NotAuthenticated):
    """A page that needs a signed-in operator: pages send the browser to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__()
        self.redirect = f"/admin/login?{urlencode({'next': next_path})}"


@dataclass(frozen=True, kw_only=True)
class Operator:
    """Who is acting: a person signed in by name, or a client holding the Bearer token."""

    name: str
    via: Literal["session", "bearer"]
    csrf: str = ""
    session_id: str = ""
    expires: int = 0  # the session's end (Unix seconds)


def token_matches(settings: Settings, supplied: str) -> bool:
    """Whether ``supplied`` is the admin token (compared in constant time)."""
    expected = settings.admin_token
    if expected is None or not supplied:
        return False
    return hmac.compare_digest(supplied.encode(), expected.get_secret_value().encode())


def merchant_key_matches(settings: Settings, supplied: str) -> bool:
    """Whether ``supplied`` is one of the merchant API keys (each compared in constant time)."""
    matches = [
        hmac.compare_digest(supplied.encode(), key.get_secret_value().encode())
        for key in settings.merchant_api_keys
    ]
    return bool(supplied) and any(matches)


def bearer_of(request: Request) -> str | None:
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    return supplied.strip() if scheme.lower() == "bearer" else None


def _signature(settings: Settings, payload: str) -> str:
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    key = hmac.new(token.encode(), b"callbackpool admin session v1", hashlib.sha256).digest()
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session(settings: Settings, name: str) -> tuple[str, Operator]:
    """A signed session cookie value for ``name``, and the operator it stands for."""
    expires = int(time.time() + settings.admin_session_hours * 3600)
    operator = Operator(
        name=name,
        via="session",
        csrf=secrets.token_urlsafe(24),
        session_id=secrets.token_urlsafe(16),
        expires=expires,
    )
    document = {"op": name, "exp": expires, "csrf": operator.csrf, "sid": operator.session_id}
    payload = _b64(json.dumps(document).encode())
    return f"{payload}.{_signature(settings, payload)}", operator


def session_operator(settings: Settings, cookie: str | None) -> Operator | None:
    """The operator a session cookie names, if it is genuine and unexpired."""
    if not cookie or settings.admin_token is None or cookie.count(".") != 1:
        return None
    payload, signature = cookie.split(".")
    if not hmac.compare_digest(signature.encode(), _signature(settings, payload).encode()):
        return None
    try:
        data = json.loads(_unb64(payload))
        name, expires, csrf = str(data["op"]), int(data["exp"]), str(data["csrf"])
        session_id = str(data["sid"])  # a cookie from before sessions had ids: signed out
    except (ValueError, KeyError, TypeError):
        return None
    if expires < time.time() or not name or not csrf or not session_id:
        return None
    return Operator(name=name, via="session", csrf=csrf, session_id=session_id, expires=expires)


def page_operator(request: Request, settings: Settings, pool: CallbackPool) -> Operator:
    """The operator of a dashboard request: the Bearer token or the session cookie of a
    session not signed out. LoginRequired (the login form, for a browser) otherwise."""
    supplied = bearer_of(request)
    if supplied is not None:
        if token_matches(settings, supplied):
            return Operator(name="bearer token", via="bearer")
        log.warning("operator page: a wrong Bearer token from %s", _client(request))
        raise NotAuthenticated()
    found = session_operator(settings, request.cookies.get(SESSION_COOKIE))
    if found is not None and pool.session_signed_out(found.session_id):
        log.warning("operator page: a signed-out session from %s", _client(request))
        found = None
    if found is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return found


def form_operator(request: Request, settings: Settings, pool: CallbackPool, csrf: str) -> Operator:
    """The operator posting a dashboard form (``page_operator``), if the form comes from
    this site and, for a session, carries the session's token."""
    operator = page_operator(request, settings, pool)
    check_same_origin(request, settings)
    if operator.via == "session" and not hmac.compare_digest(csrf.encode(), operator.csrf.encode()):
        log.warning("operator page: a form without its CSRF token from %s", _client(request))
        raise Forbidden("The form has expired: reload the page and try again")
    return operator


def check_same_origin(request: Request, settings: Settings) -> None:
    """Refuse a POST whose Origin (or, lacking it, Referer) names another site."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed:
        return  # not a browser's request; a session's form still needs its CSRF token
    own = {origin(settings.base_url).lower(), origin(str(request.base_url)).lower()}
    if claimed == "null" or origin(claimed).lower() not in own:
        log.warning("operator page: a cross-site POST from %s (%s)", _client(request), claimed)
        raise Forbidden("Cross-site requests are refused")


def _client(request: Request) -> str:
    return client_address(request) or "?"


def valid_name(name: str) -> str | None:
    """An operator's name as kept with their decisions, or None if it is not one."""
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME_CHARS or not cleaned.isprintable():
        return None
    return cleaned


def secure_cookie(settings: Settings) -> bool:
    return urlsplit(settings.base_url).scheme == "https"
