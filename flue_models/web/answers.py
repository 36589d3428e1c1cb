"""How the dashboard answers an error: the library's class name and message as JSON, with
the HTTP status of what the caller does next (400 fix the request, 404 not found, 503
retry later).

Example:
    >>> error_status(HttpError(404, "NotFound", "no run 'r-1'"))
    404
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from flue_models.errors import ConfigurationError, NotFoundError, UnavailableError


class HttpError(Exception):
    """A request the dashboard answers with an error status (bad parameter, not found).

    Example:
        ```python
        raise HttpError(404, "NotFound", "no run 'r-1'")
        ```
    """

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_status(exc: Exception) -> int:
    """The HTTP status of a library error: 400 for what the request got wrong, 503 for a
    server out of reach, 500 for the rest.

    Example:
        >>> from flue_models.errors import QueryError
        >>> error_status(QueryError("bad cursor")), error_status(HttpError(404, "NotFound", "x"))
        (400, 404)
    """
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, ConfigurationError):  # QueryError and malformed offsets too
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UnavailableError):
        return 503
    return 500


def error_body(exc: Exception) -> dict[str, Any]:
    """The JSON of an error: the library's class name and message.

    Example:
        >>> from flue_models.errors import QueryError
        >>> error_body(QueryError("Malformed cursor 'x'"))
        {'error': {'type': 'QueryError', 'message': "Malformed cursor 'x'"}}
    """
    kind = exc.kind if isinstance(exc, HttpError) else type(exc).__name__
    return {"error": {"type": kind, "message": str(exc)}}


def error_json(exc: Exception) -> JSONResponse:
    """The JSON response of an error, with its status (see :func:`error_status`).

    Example:
        >>> error_json(HttpError(404, "NotFound", "no run 'r-1'")).status_code
        404
    """
    return JSONResponse(error_body(exc), status_code=error_status(exc))
