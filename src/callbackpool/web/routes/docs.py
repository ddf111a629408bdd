"""The API documentation: Swagger UI at ``/api/docs`` (on in development, off in production
unless ``apiDocs`` says otherwise; the OpenAPI document itself is always served).

Swagger UI is not vendored: its pinned bundle comes from a CDN with Subresource Integrity,
and this one page gets a policy of its own that admits that CDN. Its start-up script is a
static file like every other script of the service.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..headers import content_security_policy
from ..templating import templates

DOCS_PATH = "/api/docs"
OPENAPI_PATH = "/api/openapi.json"
SWAGGER_UI_CDN = "https://cdn.jsdelivr.net"
SWAGGER_UI = f"{SWAGGER_UI_CDN}/npm/swagger-ui-dist@5.35.0"
# sha384 of the files of the npm package swagger-ui-dist 5.35.0, which the CDN serves as is.
SWAGGER_UI_BUNDLE_SRI = "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9"
SWAGGER_UI_CSS_SRI = "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I"
# Swagger UI sets style attributes as it renders: this page alone admits inline styles.
DOCS_POLICY = content_security_policy(
    scripts=(SWAGGER_UI_CDN,), styles=f"'self' {SWAGGER_UI_CDN} 'unsafe-inline'"
)

router = APIRouter(include_in_schema=False)


@router.get(DOCS_PATH, response_class=HTMLResponse)
async def api_docs(request: Request) -> Response:
    response = templates.TemplateResponse(
        request,
        "api_docs.html",
        {
            "openapi_url": OPENAPI_PATH,
            "swagger_ui": SWAGGER_UI,
            "bundle_sri": SWAGGER_UI_BUNDLE_SRI,
            "css_sri": SWAGGER_UI_CSS_SRI,
        },
    )
    response.headers["Content-Security-Policy"] = DOCS_POLICY
    return response
