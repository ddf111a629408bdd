"""What the routes are handed: the services the lifespan built, and who is asking."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request

from ..config import Settings
from ..gateways.sandbox import SandboxGateway
from ..pool import CallbackPool
from ..ports import Store
from .clients import ClientAddresses
from .errors import NotAuthenticated, RateLimited, WebError
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
    services: Services = request.app.state.services
    return services


async def get_pool(request: Request) -> CallbackPool:
    return services_of(request).pool


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_sandbox(request: Request) -> SandboxGateway:
    sandbox = services_of(request).sandbox
    if sandbox is None:  # the routes are mounted only with the sandbox; this is a safeguard
        raise WebError("The sandbox is not enabled")
    return sandbox


def client_address(request: Request) -> str | None:
    """The address a request came from, behind the trusted proxies (``web/clients.py``): what
    the core records with a callback and checks against the allowlist, and what the rate
    limit counts by."""
    peer = request.client.host if request.client else None
    return services_of(request).clients.resolve(peer, request.headers)


async def limit_create_token(request: Request) -> None:
    """``createTokenRatePerMinute`` per client address (behind the trusted proxies)."""
    limiter = services_of(request).create_token_limit
    if limiter is not None:
        wait = limiter.take(rate_key(client_address(request)))
        if wait is not None:
            log.warning("create-token refused: rate limit of %s", client_address(request))
            raise RateLimited(wait)


async def require_operator(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Operator endpoints take ``Authorization: Bearer <CALLBACKPOOL_ADMIN_TOKEN>``."""
    expected = services_of(request).settings.admin_token
    scheme, _, supplied = (authorization or "").partition(" ")
    if expected is None:
        raise NotAuthenticated("Operator API disabled: no admin token is configured")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), expected.get_secret_value().encode()
    ):
        raise NotAuthenticated()


PoolDep = Annotated[CallbackPool, Depends(get_pool)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SandboxDep = Annotated[SandboxGateway, Depends(get_sandbox)]
OperatorDep = Annotated[None, Depends(require_operator)]
CreateTokenLimitDep = Annotated[None, Depends(limit_create_token)]
