"""The dashboard's guards: who may connect, under which host name, and which POSTs count.

Example:
    ```python
    auth = Auth.from_environment("basic")          # $FLUE_WEB_SECRET = "admin:s3cret"
    app = Guard(app, auth=auth, hosts=None)
    ```
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flue_models.errors import ConfigurationError

#: The environment variable ``--auth`` reads its secret from.
SECRET_ENV = "FLUE_WEB_SECRET"
#: Host names a loopback-bound dashboard answers to (anything else may be DNS rebinding).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Sent with every response: no inline script or style, no framing, no referrer.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address to bind) is a loopback address.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Auth:
    """Credentials every request must carry: a bearer token, or basic ``user:password``.

    Example:
        >>> auth = Auth("token", "t0ken")
        >>> auth.allows("Bearer t0ken"), auth.allows("Bearer other"), auth.allows(None)
        (True, False, False)
    """

    kind: Literal["token", "basic"]
    secret: str = field(repr=False)

    @classmethod
    def from_environment(
        cls, kind: Literal["token", "basic"], environ: Mapping[str, str] = os.environ
    ) -> Auth:
        """Read the secret from ``$FLUE_WEB_SECRET``; a missing or malformed one is refused.

        Raises:
            ConfigurationError: the variable is unset or empty, or (basic) has no ``:``.

        Example:
            >>> Auth.from_environment("basic", {"FLUE_WEB_SECRET": "admin:pw"}).kind
            'basic'
        """
        secret = environ.get(SECRET_ENV, "")
        if not secret:
            raise ConfigurationError(
                f"--auth {kind} reads its secret from ${SECRET_ENV}, which is not set"
            )
        if kind == "basic" and ":" not in secret:
            raise ConfigurationError(f"--auth basic needs ${SECRET_ENV} in the form user:password")
        return cls(kind, secret)

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials.

        Example:
            >>> Auth("basic", "a:b").allows("Basic " + base64.b64encode(b"a:b").decode())
            True
        """
        scheme, _, value = (authorization or "").partition(" ")
        if self.kind == "token":
            given = value.encode() if scheme.lower() == "bearer" else b""
        else:
            try:
                given = base64.b64decode(value, validate=True) if scheme.lower() == "basic" else b""
            except (binascii.Error, ValueError):
                given = b""
        return bool(given) and hmac.compare_digest(given, self.secret.encode())

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header of a refusal (a browser asks for basic auth).

        Example:
            >>> Auth("token", "x").challenge
            'Bearer realm="flue-models"'
        """
        return f'{"Basic" if self.kind == "basic" else "Bearer"} realm="flue-models"'


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (no port; IPv6 without brackets).

    Example:
        >>> host_name("127.0.0.1:8000"), host_name("[::1]:8000"), host_name("localhost")
        ('127.0.0.1', '::1', 'localhost')
    """
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: the host check, the credentials check and the security headers.

    ``hosts`` (``None``: any) are the host names the dashboard answers to; a loopback
    dashboard answers only to loopback names, so a page of another site whose name was
    rebound to 127.0.0.1 cannot read it.

    Example:
        ```python
        app = Guard(app, auth=None, hosts=LOOPBACK_HOSTS)
        ```
    """

    def __init__(self, app: ASGIApp, *, auth: Auth | None, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.auth = auth
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            await _refuse(send, 421, "this dashboard does not answer to that host name", {})
            return
        if self.auth is not None and not self.auth.allows(headers.get("authorization")):
            challenge = {"www-authenticate": self.auth.challenge}
            await _refuse(send, 401, "credentials required", challenge)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": {"type": "Refused", "message": message}}).encode()
    raw = [
        (b"content-type", b"application/json"),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Csrf:
    """The token every action must carry (form field ``csrf`` or header ``X-CSRF-Token``).

    One random token per server process, put in each action form. A POST from another
    site cannot read it; a POST whose ``Origin`` is another site is refused as well.

    Example:
        >>> csrf = Csrf("t")
        >>> csrf.accepts("t", origin=None, own_origin="http://127.0.0.1:8000")
        True
        >>> csrf.accepts("t", origin="https://evil.example", own_origin="http://127.0.0.1:8000")
        False
    """

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def sign(self, text: str) -> str:
        """A signature of ``text`` under this token: what an action's redirect puts beside
        its notice, so a crafted link cannot make the dashboard say something.

        Example:
            >>> csrf = Csrf("t")
            >>> csrf.signed("run ended", csrf.sign("run ended")), csrf.signed("other", "x")
            (True, False)
        """
        return hmac.new(self.token.encode(), text.encode(), "sha256").hexdigest()

    def signed(self, text: str, signature: str) -> bool:
        """Whether ``signature`` is :meth:`sign` of ``text``.

        Example:
            >>> Csrf("t").signed("x", "")
            False
        """
        return hmac.compare_digest(self.sign(text), signature)

    def accepts(self, given: str | None, *, origin: str | None, own_origin: str) -> bool:
        """Whether a POST carrying ``given`` (from ``origin``) may act.

        Example:
            >>> Csrf("t").accepts(None, origin=None, own_origin="http://h")
            False
        """
        if origin is not None and origin != own_origin:
            return False
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())
