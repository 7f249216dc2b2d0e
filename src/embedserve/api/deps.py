"""The app's state, read off each request (nothing lives at import time).

The routes read it with these plain functions rather than as FastAPI dependencies: solving a
dependency costs each request far more than the attribute lookup it wraps (measured in-process,
``python bench/deps.py``).
"""

from __future__ import annotations

from fastapi import Request

from embedserve.registry import Registry
from embedserve.settings import Settings
from embedserve.tasks import Limits


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def limits_of(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
