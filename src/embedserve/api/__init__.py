"""The HTTP layer (FastAPI only here): app factory, error rendering, one module per route group."""

from embedserve.api.app import create_app

__all__ = ["create_app"]
