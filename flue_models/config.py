"""Settings: where the server is, and how a URL is checked and shown.

A URL is validated before any connection is made, and every place that shows a URL
(errors, logs, ``repr``) shows :func:`redact_url`'s form, so a password never leaks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from flue_models.errors import InvalidURLError

#: Environment variable naming the Redis server; unset means "start the embedded server".
REDIS_URL_ENV = "REDIS_URL"
#: Environment variable overriding the embedded server's data directory.
DATA_DIR_ENV = "FLUE_DATA_DIR"
#: Default data directory of the embedded server, relative to the working directory.
DEFAULT_DATA_DIR = Path(".flue") / "redis"

_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisURL:
    """A validated Redis URL.

    Attributes:
        url: the URL exactly as given (it may hold a password: never print it).
        display: the same URL with any password replaced by ``***``.
        scheme: ``redis``, ``rediss`` (TLS) or ``unix``.
        db: the database number the URL selects (0 when it names none).

    Example:
        >>> parse_url("redis://:s3cret@localhost:6380/2").display
        'redis://:***@localhost:6380/2'
    """

    url: str
    display: str
    scheme: str
    db: int = 0

    def __repr__(self) -> str:
        return f"RedisURL({self.display!r})"


def redact_url(url: str) -> str:
    """Return ``url`` with the password (if any) replaced by ``***``.

    The user information is everything before the *last* ``@`` after ``scheme://``, so a
    password holding ``/``, ``@``, ``:``, ``%``, ``?``, ``#`` or spaces, encoded or not, is
    masked whole. Works on malformed URLs too, so it is safe to use in any error message.

    Example:
        >>> redact_url("rediss://app:hunter2@db.example:6380/0")
        'rediss://app:***@db.example:6380/0'
        >>> redact_url("redis://:a/b@c:d e%2F@db:6379/0")
        'redis://:***@db:6379/0'
        >>> redact_url("redis://localhost:6379")
        'redis://localhost:6379'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rsplit("@", 1)[1]
    if "@" not in rest:
        return url
    userinfo, host = rest.rsplit("@", 1)
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:***" if colon and "/" not in user else "***"
    return f"{scheme}://{masked}@{host}"


def password_of(url: str) -> str | None:
    """Return the password part of ``url`` as written (and decoded), for scrubbing it from
    texts that are not ours (a server's or a client library's error message).

    Example:
        >>> password_of("redis://app:s%2Fcret@h:1/0")
        's%2Fcret'
    """
    _scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    userinfo = rest.rsplit("@", 1)[0]
    secret = userinfo.partition(":")[2] if ":" in userinfo else userinfo
    return secret or None


def scrub(text: str, url: str) -> str:
    """Return ``text`` with the password of ``url`` (as written, and decoded) masked.

    Example:
        >>> scrub("auth failed for p%40ss and p@ss", "redis://:p%40ss@h:1")
        'auth failed for *** and ***'
    """
    secret = password_of(url)
    if secret:
        for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


def parse_url(url: str) -> RedisURL:
    """Validate a ``redis://``, ``rediss://`` or ``unix://`` URL.

    Raises:
        InvalidURLError: the scheme, host, port or database number is malformed.

    Example:
        >>> parse_url("unix:///run/redis.sock?db=1").scheme
        'unix'
    """
    shown = redact_url(url)

    def bad(reason: str) -> InvalidURLError:
        return InvalidURLError(
            f"Invalid Redis URL {shown!r}: {reason}. Expected redis://[user:password@]host"
            "[:port][/db], rediss://... for TLS, or unix:///path/to/redis.sock[?db=N]."
        )

    try:
        parts: SplitResult = urlsplit(url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme not in _SCHEMES:
        raise bad(f"unsupported scheme {parts.scheme or '(none)'!r}")
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        raise bad(
            "the password holds '/', '?' or '#', which end the host part of a URL; "
            "percent-encode them (%2F, %3F, %23)"
        )
    try:
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad(f"the query {parts.query!r} is not name=value pairs") from None
    db = query.get("db", [""])[0]
    if db and not db.isdigit():
        raise bad(f"the database {db!r} is not a number")
    if parts.scheme == "unix":
        if not parts.path:
            raise bad("a unix:// URL needs a socket path")
    else:
        if not parts.hostname:
            raise bad("the host is missing")
        try:
            _ = parts.port
        except ValueError:
            raise bad("the port is not a number between 0 and 65535") from None
        db = unquote(parts.path.lstrip("/")) or db
        if db and not db.isdigit():
            raise bad(f"the database {db!r} is not a number")
    return RedisURL(url=url, display=shown, scheme=parts.scheme, db=int(db or 0))


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """Return the URLs of ``urls``: a list, or one text that may hold several separated
    by commas (``$REDIS_URL`` may name several seeds of one cluster).

    Raises:
        InvalidURLError: no URL at all (an empty list, or only commas and spaces).

    Example:
        >>> split_urls("redis://a:7000, redis://b:7001")
        ['redis://a:7000', 'redis://b:7001']
    """
    parts = [urls] if isinstance(urls, str) else list(urls)
    found = [u.strip() for part in parts for u in str(part).split(",") if u.strip()]
    if not found:
        raise InvalidURLError(f"No Redis URL in {urls!r}: give one, or several seeds of a cluster.")
    return found


def url_from_environment() -> str | None:
    """Return ``$REDIS_URL``, or ``None`` when it is unset or empty.

    Example:
        >>> import os
        >>> os.environ["REDIS_URL"] = "redis://localhost:6390"
        >>> url_from_environment()
        'redis://localhost:6390'
        >>> del os.environ["REDIS_URL"]
    """
    return os.environ.get(REDIS_URL_ENV) or None


def data_dir_from_environment() -> Path:
    """Return the embedded server's data directory: ``$FLUE_DATA_DIR`` or ``./.flue/redis``.

    Example:
        >>> str(data_dir_from_environment()).endswith("redis") or "FLUE_DATA_DIR" in os.environ
        True
    """
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured) if configured else DEFAULT_DATA_DIR
