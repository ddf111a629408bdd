"""What the routes are handed: the services the lifespan built, and who is asking."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Header, Request

from ..config import Settings
from ..domain.errors import StoreUnavailable
from ..gateways.sandbox import SandboxGateway
from ..pool import CallbackPool
from ..store.port import Store
from .auth import bearer_of, merchant_key_matches, token_matches
from .clients import ClientAddresses, client_address
from .errors import Forbidden, NotAuthenticated, RateLimited
from .limits import RateLimiter, rate_key

log = logging.getLogger("callbackpool.web")


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything the app serves with, built once by the lifespan (``app.state.services``)."""

    settings: Settings
    store: Store
    pool: CallbackPool
    sandbox: SandboxGateway | None
    clients: ClientAddresses = field(default_factory=ClientAddresses)
    create_token_limit: RateLimiter | None = None


# The getters are coroutines although they wait for nothing: FastAPI runs a plain function
# dependency in its thread pool, a hop that cost as much as serving /healthz.


def services_of(request: Request) -> Services:
    """The app's services; until the database has been brought up to date (it was away when
    the service started), StoreUnavailable: a 503 to try again."""
    startup = getattr(request.app.state, "startup", None)
    if startup is not None and not startup.ready:
        raise StoreUnavailable("the service is starting: its database is unavailable")
    services: Services = request.app.state.services
    return services


async def get_pool(request: Request) -> CallbackPool:
    return services_of(request).pool


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_sandbox(request: Request) -> SandboxGateway:
    sandbox = services_of(request).sandbox
    assert sandbox is not None, "the sandbox's routes are mounted only with the sandbox"
    return sandbox


async def require_same_origin(request: Request) -> None:
    """A browser's POST from a page of another site is refused (403): the ``Origin`` header
    (or, lacking it, the ``Referer``) must name the configured ``baseUrl``'s origin. A request
    with neither (a shop's server calling the API) passes: browsers send ``Origin`` with every
    POST they make, ``null`` where a page hides where it is."""
    named = request.headers.get("origin")
    header = "Origin"
    if named is None:
        named, header = request.headers.get("referer"), "Referer"
    if named is None:
        return
    expected = origin_of(services_of(request).settings.base_url)
    if origin_of(named) != expected:
        log.warning(
            "cross-site %s %s refused from %s (%s names another site)",
            request.method,
            request.url.path,
            client_address(request),
            header,
        )
        raise Forbidden(f"Cross-site request refused: the {header} is not this site")


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of a URL (the default port written out), None for none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


async def guard_create_token(request: Request) -> None:
    """What create-token checks before anything else: the request comes from no other site
    (``require_same_origin``), and its client is within ``createTokenRatePerMinute`` (by
    its address behind the trusted proxies). A refusal is counted in the metrics."""
    try:
        await require_same_origin(request)
    except Forbidden:
        _count_refusal(request, "cross_site")
        raise
    limiter = services_of(request).create_token_limit
    if limiter is not None:
        wait = limiter.take(rate_key(client_address(request)))
        if wait is not None:
            log.warning("create-token refused: rate limit of %s", client_address(request))
            _count_refusal(request, "rate_limited")
            raise RateLimited(wait)


def _count_refusal(request: Request, reason: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.refusals.labels(reason).inc()


def log_operator_refusal(request: Request, why: str) -> None:
    """A failed operator authentication, logged with where it came from, never the token."""
    log.warning(
        "operator authentication failed: %s %s from %s (%s)",
        request.method,
        request.url.path,
        client_address(request),
        why,
    )


async def require_operator(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Operator endpoints take ``Authorization: Bearer <CALLBACKPOOL_ADMIN_TOKEN>``."""
    settings = services_of(request).settings
    scheme, _, supplied = (authorization or "").partition(" ")
    if settings.admin_token is None:
        log_operator_refusal(request, "no admin token is configured")
        raise NotAuthenticated("Operator API disabled: no admin token is configured")
    if authorization is None:
        log_operator_refusal(request, "no credentials")
        raise NotAuthenticated()
    if scheme.lower() != "bearer" or not token_matches(settings, supplied.strip()):
        log_operator_refusal(request, "wrong token" if scheme.lower() == "bearer" else "not Bearer")
        raise NotAuthenticated()


async def require_merchant(request: Request) -> None:
    """The shop's server's endpoints take ``Authorization: Bearer <merchant API key>``
    (``merchantApiKeys``); the admin token is not one."""
    settings = services_of(request).settings
    supplied = bearer_of(request)
    if not settings.merchant_api_keys:
        raise NotAuthenticated("Merchant API disabled: no merchantApiKeys are configured")
    if supplied is None or not merchant_key_matches(settings, supplied):
        log.warning(
            "merchant authentication failed: %s %s from %s",
            request.method,
            request.url.path,
            client_address(request),
        )
        raise NotAuthenticated("A valid merchant API key is required")


PoolDep = Annotated[CallbackPool, Depends(get_pool)]
MerchantDep = Annotated[None, Depends(require_merchant)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SandboxDep = Annotated[SandboxGateway, Depends(get_sandbox)]
OperatorDep = Annotated[None, Depends(require_operator)]
CreateTokenGuardDep = Annotated[None, Depends(guard_create_token)]
SameOriginDep = Annotated[None, Depends(require_same_origin)]
