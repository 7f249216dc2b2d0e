"""The domain error tree. No HTTP here: ``api/errors.py`` maps each class to a status
and renders it in the dialect of the route that raised it.

    EmbedServeError                 base of everything a client or operator can be told
    ├── CatalogError                models.yaml is wrong (start-up only, never a response)
    ├── InvalidInput        (422)   a request field has a bad value
    │   ├── EmptyInput      (422)   an empty list or an empty text (TEI answers these with 400)
    │   └── InputTooLong    (422)   an input exceeds max_length and truncation is off
    ├── LimitExceeded       (413)   too many inputs or characters for a configured limit
    ├── ModelNotFound       (404)   no model with this id in the catalogue
    ├── WrongModelType      (400)   the model exists but serves another task
    ├── ModelUnavailable    (503)   the model failed to load or was unloaded
    ├── DeadlineExceeded    (503)   the request's time ran out before the model computed it
    ├── Unauthorized        (401)   keys are set and the request has none, or a wrong one
    ├── Overloaded          (429)   the model's queue is full; retry after ``retry_after`` s
    └── InferenceFailed     (500)   the engine raised; the client gets a generic message
"""

from __future__ import annotations

from collections.abc import Iterable

from embedserve.admission import retry_after_headers


def clip(text: str, limit: int = 100) -> str:
    """A client's string as an error message repeats it: at most ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class EmbedServeError(Exception):
    """Base class. ``message`` is safe to show to a client; ``param`` names the field."""

    code: str = "error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class CatalogError(EmbedServeError):
    """The catalogue cannot be used; the message names the model id, field and what is allowed."""

    code = "invalid_catalog"


class InvalidInput(EmbedServeError):
    code = "invalid_value"


class EmptyInput(InvalidInput):
    code = "empty_input"


class InputTooLong(InvalidInput):
    code = "input_too_long"


class LimitExceeded(EmbedServeError):
    code = "limit_exceeded"


class ModelNotFound(EmbedServeError):
    code = "model_not_found"

    def __init__(self, model_id: str, available: Iterable[str], *, param: str | None = "model") -> None:
        ids = ", ".join(sorted(available)) or "(none)"
        super().__init__(f"model '{clip(model_id)}' does not exist; available models: {ids}", param=param)
        self.model_id = model_id


class WrongModelType(EmbedServeError):
    code = "wrong_model_type"


class ModelUnavailable(EmbedServeError):
    code = "model_unavailable"


class DeadlineExceeded(EmbedServeError):
    """The request's deadline (``EMBEDSERVE_REQUEST_TIMEOUT``) passed while its inputs were queued."""

    code = "request_timeout"


class Unauthorized(EmbedServeError):
    """No API key, or not one of the server's. The message never repeats what was sent."""

    code = "invalid_api_key"


class Overloaded(EmbedServeError):
    """The model's queue is full. ``retry_after`` (seconds) becomes the Retry-After header (its whole
    seconds) and Retry-After-Ms (its milliseconds)."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_headers(self) -> dict[str, str]:
        """Its ``Retry-After`` and ``Retry-After-Ms`` (``admission.retry_after_headers``)."""
        seconds, ms = retry_after_headers(self.retry_after)
        return {"Retry-After": str(seconds), "Retry-After-Ms": str(ms)}


class InferenceFailed(EmbedServeError):
    """The engine raised while computing a request. The cause is logged, never sent."""

    code = "inference_failed"
