"""The callback routes: the gateway's return, by GET or POST, on each of the pool's paths.

Every return is handed to the core, which stores it before acting on it, and the customer's
browser is sent on (303) to the success or the error page; when the return cannot be stored
(the database is away), the page answered (503) sends it again by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from ...config import Settings
from ..clients import client_address
from ..deps import services_of
from ..errors import keep_return, mark_answer
from ..schemas import error_responses, form_pairs

CALLBACK_PREFIX = "/api/v1/payments/callback"
_METHODS = ["GET", "POST"]


async def return_params(request: Request) -> Sequence[tuple[str, str]]:
    """The return's parameters (query string, then the form body of a POST), kept with the
    request for the page that sends them again; from here on, errors are answered as a
    return's (``mark_answer``)."""
    mark_answer(request, "callback")
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with request.form() as form:
                params += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        else:
            params += form_pairs(await request.body())
    keep_return(request, params)
    return params


ReturnParams = Annotated[Sequence[tuple[str, str]], Depends(return_params)]


def _hand_over(request: Request, path: str, params: Sequence[tuple[str, str]]) -> RedirectResponse:
    result = services_of(request).pool.handle_callback(
        path, params, method=request.method, client_addr=client_address(request)
    )
    return RedirectResponse(result.redirect, status_code=303)


def _route_for(path: str) -> Callable[[Request, Sequence[tuple[str, str]]], RedirectResponse]:
    def gateway_return(request: Request, params: ReturnParams) -> RedirectResponse:
        return _hand_over(request, path, params)

    return gateway_return


def _prefixed_return_for(
    configured: frozenset[str],
) -> Callable[[str, Request, Sequence[tuple[str, str]]], RedirectResponse]:
    def prefixed_return(handler: str, request: Request, params: ReturnParams) -> RedirectResponse:
        """The hosted form's return: the gateway sends the customer's browser here with its
        11 parameters (query string or form body). Answers 303 to the success or error
        page."""
        path = f"{CALLBACK_PREFIX}/{handler}"
        # A configured path is known without asking the database; another one may be a
        # path removed from the configuration that still takes its leases' late returns.
        if path not in configured and not services_of(request).pool.has_path(path):
            mark_answer(request, "api")
            raise HTTPException(404)
        return _hand_over(request, path, params)

    return prefixed_return


def _under_prefix(path: str) -> bool:
    handler = path.removeprefix(CALLBACK_PREFIX + "/")
    return handler != path and handler != "" and "/" not in handler


def add_callback_routes(app: FastAPI, settings: Settings) -> None:
    """One route for the paths under the guide's prefix (every configured one, and any other
    the pool knows: a path removed from the configuration still takes the late returns of
    the leases it had), and a route of its own for each configured path elsewhere. Routes
    are matched one after the other: one route for a pool of many paths keeps that short."""
    paths = (*settings.callback_paths, *settings.reserve_paths)
    for path in paths:
        if not _under_prefix(path):
            app.add_api_route(path, _route_for(path), methods=_METHODS, include_in_schema=False)
    prefixed_return = _prefixed_return_for(frozenset(p for p in paths if _under_prefix(p)))
    for method in _METHODS:
        app.router.add_api_route(
            CALLBACK_PREFIX + "/{handler}",
            prefixed_return,
            methods=[method],
            status_code=303,
            response_class=RedirectResponse,
            responses={
                303: {
                    "description": "To the payment's success page or to the error page",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": {},
                },
                **error_responses(404),
            },
            tags=["gateway"],
            summary=f"The hosted form's return by {method}",
            operation_id=f"gateway_return_{method.lower()}",
        )
