"""``/healthz`` (the process answers), ``/readyz`` (it can serve: database reachable,
migrations current, sweeper running) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...domain.errors import CallbackPoolError
from ..auth import bearer_of, token_matches
from ..deps import Services, log_operator_refusal, services_of
from ..errors import NotAuthenticated

log = logging.getLogger("callbackpool.web")

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (a liveness probe: it checks nothing else)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: `reasons` says why"}},
)
def readyz(request: Request) -> JSONResponse:
    """Whether this instance can serve: the database answers, its schema has every
    migration this version knows, and the sweeper runs. 503 with the reasons otherwise."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return _not_ready(["starting"])
    startup = getattr(request.app.state, "startup", None)
    if startup is not None and not startup.ready:
        return _not_ready(["starting", startup.problem])
    reasons = _database_problems(services)
    sweeper = getattr(request.app.state, "sweeper", None)
    if sweeper is None or not sweeper.running:
        reasons.append("the sweeper is not running")
    if reasons:
        return _not_ready(reasons)
    return JSONResponse(
        {"status": "ready", "database": "ok", "migrations": "current", "sweeper": "running"}
    )


def _database_problems(services: Services) -> list[str]:
    try:
        services.pool.now()  # a read transaction: the database answers
        pending = services.store.pending_migrations()
    except CallbackPoolError as exc:
        log.warning("readyz: the database is unavailable: %s", exc.message)
        return ["the database is unavailable"]
    if pending:
        names = ", ".join(name for name, _ in pending)
        return [f"migrations pending: {names} (run 'callbackpool migrate')"]
    return []


def _not_ready(reasons: list[str]) -> JSONResponse:
    return JSONResponse(
        {"status": "unavailable", "reasons": reasons},
        status_code=503,
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"description": "No token"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics. Needs the admin token (``Authorization: Bearer …``) unless
    ``metricsRequireToken`` is false."""
    services = services_of(request)
    if services.settings.metrics_require_token:
        supplied = bearer_of(request)
        if services.settings.admin_token is None:
            log_operator_refusal(request, "no admin token is configured")
            raise NotAuthenticated("Metrics disabled: no admin token is configured")
        if supplied is None or not token_matches(services.settings, supplied):
            log_operator_refusal(request, "no credentials" if supplied is None else "wrong token")
            raise NotAuthenticated()
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
