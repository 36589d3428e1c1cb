"""URL validation and password redaction."""

from __future__ import annotations

import pytest

from flue_models.config import parse_url, redact_url
from flue_models.errors import InvalidURLError


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://localhost:6380/3",
        "redis://user:pw@10.0.0.1:6379/0",
        "rediss://:pw@db.example.com:6380",
        "unix:///var/run/redis.sock",
        "unix:///var/run/redis.sock?db=2",
    ],
)
def test_valid_urls_are_accepted(url: str) -> None:
    assert parse_url(url).url == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:6379", "unsupported scheme"),
        ("localhost:6379", "unsupported scheme"),
        ("redis://:hunter2@localhost:notaport", "port"),
        ("redis://:hunter2@:6379", "host"),
        ("redis://localhost:6379/zero", "database"),
        ("unix://", "socket path"),
    ],
)
def test_malformed_urls_get_a_clear_error(url: str, reason: str) -> None:
    with pytest.raises(InvalidURLError, match=reason) as caught:
        parse_url(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
        ("redis://app:s3cret@h:1", "redis://app:***@h:1"),
        ("rediss://tok@h", "rediss://***@h"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://:p@ss:w@rd@h:1/0", "redis://:***@h:1/0"),
    ],
)
def test_passwords_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_repr_of_a_parsed_url_hides_the_password() -> None:
    parsed = parse_url("redis://:topsecret@localhost:6379/0")
    assert "topsecret" not in repr(parsed)
    assert "topsecret" not in parsed.display


#: Passwords that break naive URL handling: each must never be shown.
HOSTILE_PASSWORDS = ["QX/Z9/K", "QX@Z9@K", "QX:Z9:K", "QX%2FZ9%40K", "QX Z9 K", "QX?Z9#K"]


@pytest.mark.parametrize("secret", HOSTILE_PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "redis://app:{}@db.example:6379/0",
        "redis://:{}@db.example:6379/0",
        "rediss://app:{}@db.example:notaport/0",
        "redis://app:{}@db.example:6379/zero",
        "http://app:{}@db.example",
        "app:{}@db.example:6379",
    ],
)
def test_hostile_passwords_never_show(secret: str, template: str) -> None:
    url = template.format(secret)
    assert "Z9" not in redact_url(url)
    shown: list[str] = []
    try:
        parsed = parse_url(url)
        shown += [parsed.display, repr(parsed)]
    except InvalidURLError as exc:
        shown.append(str(exc))
    assert not [text for text in shown if "Z9" in text], shown


def test_an_unencoded_slash_in_a_password_says_to_percent_encode_it() -> None:
    with pytest.raises(InvalidURLError, match="percent-encode") as caught:
        parse_url("redis://app:se/cret@db.example:6379/0")
    assert "se/cret" not in str(caught.value)
