"""OpenTelemetry spans for library operations, following the database conventions.

Off unless the ``otel`` extra (``opentelemetry-api``) is installed and the application
has configured a tracer provider; then every library operation (a save, a get, a query
page, a run's start and end, a stream append or read, a migration file) is one CLIENT
span named ``<operation> <collection>`` with the attributes ``db.system.name``,
``db.operation.name``, ``db.collection.name``, ``db.namespace``, ``server.address`` and
``server.port``. No value of a record, event or key, and no credential, is ever recorded.

Example:
    ```python
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())   # flue-models spans now go to it
    ```
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

try:  # the optional ``otel`` extra
    from opentelemetry import trace
    from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - exercised by installs without the extra
    trace = None  # type: ignore[assignment]
    ProxyTracerProvider = None  # type: ignore[assignment,misc]

#: Whether "no tracer provider is set" can be read from OpenTelemetry's own global (its
#: ``trace._TRACER_PROVIDER``, ``None`` until a provider is set, by code or from the
#: ``OTEL_PYTHON_TRACER_PROVIDER`` variable) rather than by asking
#: ``trace.get_tracer_provider()``, which, while none is set, looks that variable up in
#: ``os.environ`` on every call (1.5 µs on each operation of the library). Only when the
#: global exists as expected and the variable was not set when this module loaded;
#: otherwise every check asks the public function.
UNSET_READABLE = (
    trace is not None
    and getattr(trace, "_TRACER_PROVIDER", False) is None
    and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
)

#: ``trace``, ``ProxyTracerProvider`` and ``UNSET_READABLE`` are exported for
#: ``FlueCommands.span``, which inlines :func:`enabled` (the check of every operation).
__all__ = [
    "SCOPE",
    "UNSET_READABLE",
    "ProxyTracerProvider",
    "enabled",
    "operation_span",
    "server_attributes",
    "trace",
]

#: The instrumentation scope name of every span.
SCOPE = "flue_models"


def server_attributes(url: str, scheme: str, db: int) -> dict[str, Any]:
    """Return the connection attributes of a span (never the password).

    Example:
        >>> server_attributes("redis://:pw@db.local:6380/2", "redis", 2)
        {'db.namespace': '2', 'server.address': 'db.local', 'server.port': 6380}
    """
    parts = urlsplit(url)
    attributes: dict[str, Any] = {"db.namespace": str(db)}
    if scheme == "unix":
        attributes["server.address"] = parts.path
    else:
        attributes["server.address"] = parts.hostname or ""
        attributes["server.port"] = parts.port or 6379
    return attributes


def enabled() -> bool:
    """Whether spans are recorded: the extra is installed and a provider is configured.

    Example:
        ```python
        if enabled():
            ...
        ```
    """
    if trace is None or (UNSET_READABLE and trace._TRACER_PROVIDER is None):
        return False
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


@contextlib.contextmanager
def operation_span(
    operation: str,
    collection: str | None,
    system: str,
    server: Mapping[str, Any],
    **extra: Any,
) -> Iterator[None]:
    """Run the body inside one CLIENT span when telemetry is on; do nothing otherwise.

    An exception leaves the span with status ERROR and ``error.type`` set, and goes on.

    Example:
        ```python
        with operation_span("save", "ticket", "redis", server):
            ...
        ```
    """
    if not enabled():
        yield
        return
    attributes = {"db.system.name": system, "db.operation.name": operation, **server, **extra}
    if collection is not None:
        attributes["db.collection.name"] = collection
    name = f"{operation} {collection}" if collection else operation
    tracer = trace.get_tracer(SCOPE)
    with tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        try:
            yield
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
