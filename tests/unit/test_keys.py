"""Key names: prefix normalization and collision-free encoding of user segments."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from redis.crc import key_slot

from flue_models.errors import ConfigurationError, DecodeError
from flue_models.keys import KeySpace, check_collection, decode_segment, encode_segment
from flue_models.model.spec import decode_owned, encode_owned, owned_name


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


#: Ids UTF-8 can store (a lone surrogate is refused before any key is named).
ID = st.text(st.characters(exclude_categories=["Cs"]), min_size=1)


@given(ID)
def test_a_sessions_key_set_is_where_its_model_puts_its_row_and_owned_keys(session_id: str) -> None:
    from flue_models.state.session import Session

    keys, spec = KeySpace("p"), Session.__flue_spec__
    own = keys.session(session_id)
    assert own.row == spec.record_key(keys, session_id)
    assert list(own[1:]) == Session.owned_keys(keys, session_id)
    assert [own.forks] == Session.delete_guards(keys, session_id)
    assert len({key_slot(k.encode()) for k in own}) == 1


@given(ID, ID)
def test_a_sessions_submission_keys_are_in_the_bucket_of_its_submissions(
    session_id: str, submission_id: str
) -> None:
    from flue_models.state.submission import Submission

    keys, spec = KeySpace("p"), Submission.__flue_spec__
    bucket = spec.keys_of(keys, session_id)
    own = keys.session_submissions(session_id)
    assert own.submissions == spec.equality_key(bucket, "session_id", session_id)
    assert own.open == spec.equality_key(bucket, "open_session", session_id)
    journal = keys.journal(submission_id, session_id)
    assert journal == Submission.owned_keys(bucket, submission_id)[0]
    row = spec.record_key(keys, submission_id, session_id)
    assert len({key_slot(k.encode()) for k in [*own, journal, row]}) == 1
    receipt = keys.receipt(submission_id)
    assert key_slot(receipt.receipt.encode()) == key_slot(receipt.times.encode())


@given(ID)
def test_a_runs_stream_is_in_the_runs_bucket_and_any_other_in_a_slot_of_its_own(
    run_id: str,
) -> None:
    from flue_models.state.run import WorkflowRun

    keys, spec = KeySpace("p"), WorkflowRun.__flue_spec__
    stream = keys.stream(WorkflowRun.stream_path(run_id))
    assert stream.meta == spec.owned_key(keys, "stream", run_id)
    row = spec.record_key(keys, run_id)
    assert {key_slot(k.encode()) for k in stream} == {key_slot(row.encode())}
    other = keys.stream(f"agents/{run_id}")
    assert {k.split("}")[0] for k in other} == {f"p::{{stream:{encode_segment('agents/' + run_id)}"}


# What a row owns (_owned) ------------------------------------------------------------

_SET_NAMES = st.sampled_from(
    ["all", "idx:status:b3Blbg", "idx:email:YUBi", "rng:priority", "rng:created_at"]
)
_SCORES = st.floats(allow_nan=False) | st.integers(-(2**53), 2**53).map(float)


@given(
    st.dictionaries(_SET_NAMES, _SCORES),
    st.dictionaries(st.sampled_from(["uniq:email", "uniq:name"]), st.binary()),
    st.sampled_from([0, 7]),
    st.text(min_size=1),
)
def test_owned_round_trips_relative_to_the_rows_bucket(
    entries: dict[str, float], unique: dict[str, bytes], bucket: int, record_id: str
) -> None:
    keys = KeySpace("{app}:p").in_bucket(bucket)
    base = keys.record_prefix("t")
    absolute = {base + k: s for k, s in entries.items()}
    claims = {base + k: v for k, v in unique.items()}
    raw = encode_owned(base, absolute, claims)
    assert raw.isascii()
    assert b"  " not in raw
    assert not raw.startswith(b" ")
    assert decode_owned(keys, keys.record("t", record_id), raw) == (absolute, claims)
    assert owned_name(keys.record("t", record_id), base + "all") == "all"


def test_owned_names_a_key_outside_the_rows_bucket_relative_to_the_prefix() -> None:
    keys = KeySpace("p")
    row = keys.record("t", "x")
    other = keys.in_bucket(3).all("t")
    raw = encode_owned(keys.record_prefix("t"), {other: 1.0}, {})
    assert raw == b"@1 {t:3}:all"
    assert decode_owned(keys, row, raw) == ({other: 1.0}, {})


@pytest.mark.parametrize(
    "bad", [b"all", b"@1  all", b"@ all", b"!uniq:email", b"@x all", b"\xff", b"{}", b" @1 all"]
)
def test_an_owned_field_encode_owned_cannot_write_is_a_decode_error(bad: bytes) -> None:
    keys = KeySpace("p")
    with pytest.raises(DecodeError, match="_owned"):
        decode_owned(keys, keys.record("t", "x"), bad)
