"""Key names: prefix normalization and collision-free encoding of user segments."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from flue_models.errors import ConfigurationError
from flue_models.keys import KeySpace, check_collection, decode_segment, encode_segment


@pytest.mark.parametrize(
    ("given_prefix", "expected"), [("flue", "flue"), ("app:", "app"), ("a:b::", "a:b")]
)
def test_prefix_trailing_colons_are_stripped(given_prefix: str, expected: str) -> None:
    assert KeySpace(given_prefix).prefix == expected


@pytest.mark.parametrize("bad", ["", ":", ":::", "my app"])
def test_empty_or_blank_prefix_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        KeySpace(bad)


@given(st.text(min_size=1))
def test_segments_round_trip_and_never_contain_a_colon(value: str) -> None:
    encoded = encode_segment(value)
    assert ":" not in encoded
    assert decode_segment(encoded) == value.encode()


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_ids_give_distinct_record_keys(a: str, b: str) -> None:
    keys = KeySpace("p")
    assert (keys.record("c", a) == keys.record("c", b)) == (a == b)


@pytest.mark.parametrize("word", ["all", "version"])
def test_fixed_words_are_not_the_encoding_of_any_id(word: str) -> None:
    # A fixed word at the record's depth (<prefix>:<collection>:<word>) could only
    # collide with a record key if some byte string encoded to it; the encoder is
    # canonical, so re-encoding tells. (`meta` sits one level up, at <prefix>:meta.)
    assert encode_segment(decode_segment(word)) != word


def test_ids_with_colons_cannot_reach_another_collection() -> None:
    keys = KeySpace("p")
    assert keys.record("a", "b:all") != keys.all("a")
    assert keys.record("a", "x").count(":") == 4  # p::{a:0}:<id>


def test_empty_record_id_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="non-empty"):
        KeySpace("p").record("c", "")


@pytest.mark.parametrize("bad", ["Ticket", "meta", "1abc", "a-b", ""])
def test_bad_collection_names_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="collection"):
        check_collection(bad)


def test_scan_pattern_escapes_glob_characters() -> None:
    assert KeySpace("a*[b]?").pattern() == "a\\*\\[b\\]\\?::*"


@pytest.mark.parametrize(
    ("outer", "inner"), [("app", "app:prod"), ("iso", "iso:tenant"), ("a:b", "a:b:c:d")]
)
def test_nested_prefixes_never_match_each_others_keys(outer: str, inner: str) -> None:
    import fnmatch

    a, b = KeySpace(outer), KeySpace(inner)
    samples = [
        a.meta, a.migration_lock, a.record("tenant", "meta"), a.all("prod"),
        a.stream("x").events, a.collection_key("prod", "x"), a.owned("tenant", "meta", "x"),
        b.meta, b.migration_lock, b.record("tenant", "x"), b.all("ticket"),
        b.stream("x").meta, b.closed_streams(),
    ]  # fmt: skip
    for key in samples:
        mine = key.startswith(a.head)
        assert fnmatch.fnmatchcase(key, a.pattern()) == mine, key
        assert fnmatch.fnmatchcase(key, b.pattern()) == (not mine), key
    assert a.collection_pattern("prod") != b.pattern()


@pytest.mark.parametrize("bad", ["a::b", "::a", "a::"])
def test_a_prefix_may_not_hold_the_separator(bad: str) -> None:
    if bad == "a::":
        assert KeySpace(bad).prefix == "a"  # trailing colons are stripped
        return
    with pytest.raises(ConfigurationError, match="::"):
        KeySpace(bad)
