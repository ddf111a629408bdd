"""The HTTP service: ``create_app(settings)`` gives the ASGI app (FastAPI)."""

from .app import create_app

__all__ = ["create_app"]
