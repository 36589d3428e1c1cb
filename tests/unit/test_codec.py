"""Field encoding: exact round trips, deterministic bytes, order-preserving scores."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, Literal

import pytest
from hypothesis import given, strategies as st
from pydantic import BaseModel

from flue_models.errors import EncodingError
from flue_models.model.codec import canonical_json, codec_for, epoch_score


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Inner(BaseModel):
    name: str
    tags: list[str]
    extra: dict[str, int]


aware = st.datetimes(timezones=st.timezones(), allow_imaginary=False).filter(
    lambda v: v.utcoffset() is not None
)

CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (str, st.text()),
    (int, st.integers()),
    (float, st.floats(allow_nan=False)),
    (bool, st.booleans()),
    (Decimal, st.decimals(allow_nan=False, allow_infinity=False)),
    (dt.datetime, aware),
    (dt.date, st.dates()),
    (uuid.UUID, st.uuids()),
    (Color, st.sampled_from(Color)),
    (Level, st.sampled_from(Level)),
    (bytes, st.binary()),
    (Literal["a", "b"], st.sampled_from(["a", "b"])),
    (Literal[1, 2], st.sampled_from([1, 2])),
    (list[int], st.lists(st.integers())),
    (
        dict[str, float],
        st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False)),
    ),  # inside JSON: finite (test_values)
    (tuple[int, str], st.tuples(st.integers(), st.text())),
    (
        Inner,
        st.builds(Inner, tags=st.lists(st.text()), extra=st.dictionaries(st.text(), st.integers())),
    ),
    (int | None, st.none() | st.integers()),
]


@pytest.mark.parametrize(("annotation", "strategy"), CASES, ids=lambda c: str(c)[:30])
@given(data=st.data())
def test_every_type_round_trips_exactly(
    annotation: Any, strategy: Any, data: st.DataObject
) -> None:
    value = data.draw(strategy)
    codec = codec_for("f", annotation)
    if value is None:
        assert codec.nullable
        return
    encoded = codec.encode(value)
    assert codec.encoder(value) == encoded  # the one-call encoder writes the same bytes
    decoded = codec.adapter.validate_python(codec.decode(encoded))
    if isinstance(value, dt.datetime):
        # The instant is kept (stored in UTC). Compare in UTC: PEP 495 makes an ambiguous
        # local time (a DST fold) unequal to every time in another zone.
        assert decoded == value.astimezone(dt.UTC)
    else:
        assert decoded == value
    assert type(decoded) is type(value) or isinstance(value, bool | enum.Enum)
    assert codec.encode(decoded) == encoded  # a second trip gives the same bytes


def _encoded_or_refused(encode: Any, value: Any) -> Any:
    try:
        return encode(value)
    except EncodingError as exc:
        return ("refused", str(exc))


UTC_TIMES = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(dt.UTC)
)


@given(
    st.one_of(
        UTC_TIMES,  # the encoder's own path: written without isoformat
        aware,
        st.datetimes(),  # naive: refused
    )
)
def test_the_one_call_time_encoder_writes_isoformat_and_refuses_alike(value: Any) -> None:
    codec = codec_for("t", dt.datetime)
    assert _encoded_or_refused(codec.encoder, value) == _encoded_or_refused(codec.encode, value)


@given(
    st.one_of(
        st.integers(),
        st.sampled_from([10**600 - 1, 10**600, -(10**600), 10**5000, True, 3.0]),
        st.text(),  # lone surrogates: refused alike
    )
)
def test_the_one_call_int_and_text_encoders_refuse_alike(value: Any) -> None:
    for annotation in (int, str):
        codec = codec_for("n", annotation)
        try:
            expected = _encoded_or_refused(codec.encode, value)
        except (TypeError, ValueError) as exc:  # (not an EncodingError: the same raised)
            with pytest.raises(type(exc)):
                codec.encoder(value)
            continue
        assert _encoded_or_refused(codec.encoder, value) == expected


@given(st.dictionaries(st.text(), st.integers() | st.text()))
def test_equal_dicts_encode_to_equal_bytes_whatever_the_insertion_order(
    value: dict[str, Any],
) -> None:
    codec = codec_for("d", dict[str, Any])
    reordered = dict(reversed(list(value.items())))
    assert codec.encode(value) == codec.encode(reordered)
    assert codec.encode(value) == canonical_json(dict(sorted(value.items()))).encode()


def test_json_is_sorted_and_compact() -> None:
    assert codec_for("d", dict[str, Any]).encode({"b": [1, 2], "a": {"y": 1, "x": 2}}) == (
        b'{"a":{"x":2,"y":1},"b":[1,2]}'
    )


def test_sets_encode_deterministically() -> None:
    codec = codec_for("s", set[str])
    assert codec.encode({"b", "a", "c"}) == b'["a","b","c"]'


def test_datetimes_are_stored_in_utc_with_microseconds() -> None:
    plus5 = dt.timezone(dt.timedelta(hours=5))
    value = dt.datetime(2026, 1, 2, 8, 4, 5, 6, tzinfo=plus5)
    assert codec_for("t", dt.datetime).encode(value) == b"2026-01-02T03:04:05.000006+00:00"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(EncodingError, match="naive datetime"):
        codec_for("t", dt.datetime).encode(dt.datetime(2026, 1, 1))


@given(aware, aware)
def test_datetime_scores_keep_the_order_of_instants(a: dt.datetime, b: dt.datetime) -> None:
    low = dt.datetime(1700, 1, 1, tzinfo=dt.UTC)
    high = dt.datetime(2250, 1, 1, tzinfo=dt.UTC)
    if not (low < a < high and low < b < high):
        return
    assert (epoch_score(a) < epoch_score(b)) == (a < b)
    assert (epoch_score(a) == epoch_score(b)) == (a == b)


@given(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.integers(min_value=-(2**53), max_value=2**53),
)
def test_int_scores_are_exact_within_2_53(a: int, b: int) -> None:
    codec = codec_for("n", int)
    assert (codec.score(a) < codec.score(b)) == (a < b)


def test_int_beyond_2_53_has_no_exact_score() -> None:
    with pytest.raises(EncodingError, match="2\\*\\*53"):
        codec_for("n", int).score(2**53 + 1)


def test_nan_has_no_score() -> None:
    with pytest.raises(EncodingError, match="NaN"):
        codec_for("x", float).score(float("nan"))


def test_index_values_are_canonical_for_equal_numbers() -> None:
    assert codec_for("d", Decimal).index_value(Decimal("1.0")) == codec_for(
        "d", Decimal
    ).index_value(Decimal("1.00"))
    assert codec_for("f", float).index_value(-0.0) == codec_for("f", float).index_value(0.0)


def test_malformed_stored_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        codec_for("b", bool).decode(b"yes")
    with pytest.raises(ValueError, match="offset"):
        codec_for("t", dt.datetime).decode(b"2026-01-01T00:00:00")
