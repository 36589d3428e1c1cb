"""Every field type: a value round-trips exactly or is refused before any I/O (property
tests), and the refusal names the field."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from flue_models.errors import ConfigurationError, EncodingError
from flue_models.keys import encode_segment
from flue_models.model.codec import FieldCodec, codec_for, value_problem

#: Every code point, lone surrogates included (hypothesis leaves them out by default).
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
HUGE_INTS = st.integers(4290, 4310).map(lambda digits: 10**digits)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | HUGE_INTS | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def round_trip(codec: FieldCodec, value: Any) -> tuple[Any, str | None]:
    """Encode, decode and validate as the model would: ``(value read back, None)``, or
    ``(None, the refusal's text)``."""
    try:
        return codec.adapter.validate_python(codec.decode(codec.encode(value))), None
    except EncodingError as exc:
        return None, str(exc)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=300)
@given(ANY_TEXT)
def test_text_round_trips_or_is_refused(value: str) -> None:
    codec = codec_for("title", str)
    back, refused = round_trip(codec, value)
    if refused is not None:
        assert "'title'" in refused
        assert "surrogate" in refused
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    else:
        assert back == value


@settings(max_examples=200)
@given(st.integers() | HUGE_INTS | HUGE_INTS.map(lambda n: -n))
def test_ints_round_trip_or_are_refused(value: int) -> None:
    codec = codec_for("count", int)
    back, refused = round_trip(codec, value)
    if refused is not None:
        assert "'count'" in refused
        assert abs(value) >= 10**4300
    else:
        assert back == value


@settings(max_examples=200)
@given(st.floats())
def test_floats_round_trip_exactly(value: float) -> None:
    back, refused = round_trip(codec_for("ratio", float), value)
    assert refused is None
    assert same(value, back)


@settings(max_examples=200)
@given(
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.integers(-1100, 1100).map(lambda e: Decimal(f"1E{e}"))
)
def test_decimals_round_trip_or_are_refused(value: Decimal) -> None:
    codec = codec_for("price", Decimal)
    back, refused = round_trip(codec, value)
    if refused is not None:
        assert "'price'" in refused
        assert not value.is_finite() or abs(value.adjusted()) > 1000
    else:
        assert back == value
        assert len(codec.index_value(value)) < 1100  # the index key stays bounded


@settings(max_examples=200)
@given(
    st.datetimes(timezones=st.timezones())
    | st.sampled_from(
        [
            dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
            dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        ]
    )
)
def test_datetimes_round_trip_or_are_refused(value: dt.datetime) -> None:
    codec = codec_for("at", dt.datetime)
    back, refused = round_trip(codec, value)
    if refused is not None:
        assert "'at'" in refused
        assert "outside years 1 to 9999" in refused or "does not exist" in refused
    else:
        assert back == value.astimezone(dt.UTC)  # the same instant (a fold keeps its side)


@settings(max_examples=300)
@given(JSON)
def test_json_round_trips_or_is_refused(value: Any) -> None:
    codec = codec_for("payload", Any)
    back, refused = round_trip(codec, value)
    if refused is not None:
        assert "'payload'" in refused
        assert value_problem(value) is not None
    else:
        assert back == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": float("nan")}, "nan"),
        ([1, float("inf")], "inf"),
        ({"k\ud800": 1}, "surrogate"),
        ({"n": 10**5000}, "digits"),
    ],
)
def test_json_refusals_say_where_and_what(value: Any, problem: str) -> None:
    with pytest.raises(EncodingError, match=problem) as refused:
        codec_for("payload", Any).encode(value)
    assert "'payload'" in str(refused.value)


def test_a_lone_surrogate_in_a_key_segment_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="surrogate"):
        encode_segment("run-\udc00")
