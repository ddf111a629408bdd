"""The ASGI app: ``create_app(settings)``. Its lifespan builds the services
(``app.state.services``), brings the database up to date (``startup``) and runs the sweeper;
routes get them through the getters of ``deps``, which answer 503 until the database is ready.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles

from ..clock import Clock
from ..compose import build_pool, sandbox_gateway
from ..config import Settings
from ..store.port import Store
from .clients import ClientAddresses
from .deps import Services
from .errors import install_error_handlers
from .headers import ResponseHeaders, security_headers
from .hosts import AllowedHosts, redirect_slashes_to
from .limits import BodyLimit, RateLimiter, SignInThrottle
from .metrics import Metrics
from .routes import (
    admin_api,
    callbacks,
    dashboard,
    docs,
    hosted,
    operations,
    pages,
    payments,
    sandbox,
    shop_api,
)
from .schemas import complete_document
from .startup import Startup
from .sweeper import Sweeper
from .templating import STATIC_DIR

log = logging.getLogger("callbackpool.web")


def create_app(
    settings: Settings, *, store: Store | None = None, clock: Clock | None = None
) -> FastAPI:
    """The service for ``settings``. ``store`` and ``clock`` replace the ones the settings
    name (tests); the store is opened, migrated and closed by the app's lifespan."""

    # Refused here, before anything listens: production without an admin token, and so on.
    warnings = settings.service_warnings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for warning in warnings:
            log.warning("%s%s", "PRODUCTION: " if settings.env == "production" else "", warning)
        services = await run_in_threadpool(_build_services, settings, store, clock)
        metrics.watch(services.pool)
        sweeper = Sweeper(services.pool, settings.sweep_interval_seconds)
        app.state.sweeper = sweeper

        def serving() -> None:
            log.info(
                "callbackpool serving %d callback paths at %s%s",
                len(settings.callback_paths),
                settings.base_url,
                " with the sandbox gateway" if services.sandbox else "",
            )

        startup = Startup(services.pool, sweeper, on_ready=serving)
        app.state.startup = startup
        app.state.services = services
        try:
            await startup.begin()  # migrations and paths, or (database away) in the background
            yield
        finally:
            await startup.stop()
            await sweeper.stop()
            services.store.close()

    app = FastAPI(
        title="callbackpool",
        version=_version(),
        summary="Callback URLs leased to pending payments of a hosted payment form.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=docs.OPENAPI_PATH,
    )
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # A registry of the app's own: tests build many apps in one process.
    metrics = Metrics()
    app.state.metrics = metrics
    # Failed dashboard sign-ins per client (this process's; docs/security.md).
    app.state.sign_in_throttle = SignInThrottle()
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(ResponseHeaders, headers=security_headers(settings))
    # Outermost: a request for another host is refused before anything else reads it.
    app.add_middleware(AllowedHosts, hosts=settings.allowed_host_names)

    app.include_router(payments.router)
    app.include_router(shop_api.router)
    app.include_router(shop_api.events_router)
    callbacks.add_callback_routes(app, settings)
    app.include_router(pages.router)
    app.include_router(hosted.router)
    app.include_router(admin_api.router)
    app.include_router(dashboard.router)
    app.include_router(operations.router)
    if settings.sandbox.enabled:
        app.include_router(sandbox.router)
    if settings.api_docs_enabled():
        app.include_router(docs.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    redirect_slashes_to(app.router, settings.base_url)
    # Where people start (the demo prints these).
    app.state.links = {
        "checkout": "/checkout",
        "dashboard": "/admin",
        "api": payments.PREFIX,
        "pool-stats": f"{payments.PREFIX}/pool-stats",
        "metrics": "/metrics",
    }
    if settings.api_docs_enabled():
        app.state.links["docs"] = docs.DOCS_PATH
    return app


def _build_services(settings: Settings, store: Store | None, clock: Clock | None) -> Services:
    """The store, the pool and the rest, without a word to the database yet (``Startup``
    migrates and loads the paths)."""
    pool = build_pool(settings, store=store, clock=clock, migrate=False, sync_slots=False)
    return Services(
        settings=settings,
        store=pool.store,
        pool=pool,
        sandbox=sandbox_gateway(settings) if settings.sandbox.enabled else None,
        clients=ClientAddresses(settings.trusted_proxy_networks, settings.forwarded_header),
        create_token_limit=(
            RateLimiter(settings.create_token_rate_per_minute)
            if settings.create_token_rate_per_minute
            else None
        ),
    )


def _version() -> str:
    try:
        return version("callbackpool")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
