"""Class creation refuses declarations that cannot work; queries fail when built."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Any

import pytest
from pydantic import Field

import flue_models as fm
from flue_models import Indexed, Model, Unique
from flue_models.keys import KeySpace
from flue_models.model.planner import decode_cursor, encode_cursor, plan_query


def declare(collection: str | None = None, **annotations: Any) -> type[Model]:
    """Create a model class with the given field annotations (defaults left out)."""
    meta = type("Meta", (), {"collection": collection or f"c{uuid.uuid4().hex[:10]}"})
    return make("Declared", meta, annotations)


def make(name: str, meta: type | None, annotations: dict[str, Any]) -> type[Model]:
    qualname = f"{name}_{uuid.uuid4().hex[:6]}"
    namespace: dict[str, Any] = {
        "__annotations__": annotations,
        "__module__": __name__,
        "__qualname__": qualname,
    }
    if meta is not None:
        meta.__qualname__ = f"{qualname}.Meta"  # nested, as a class body would make it
        namespace["Meta"] = meta
    return type(name, (Model,), namespace)


class Article(Model):
    class Meta:
        collection = "unit_article"
        order_by = "published_at"
        indexes = (("section", "status"),)

    section: Annotated[str, Indexed()]
    status: Annotated[str, Indexed()]
    words: Annotated[int, Indexed(range=True)]
    slug: Annotated[str, Unique()]
    title: str = ""
    published_at: dt.datetime = fm.now()


def test_missing_meta_or_collection_is_refused() -> None:
    with pytest.raises(fm.ConfigurationError, match="collection"):
        make("NoMeta", None, {"x": int})


@pytest.mark.parametrize("abstract", [False, True], ids=["concrete", "abstract"])
def test_a_misspelled_meta_option_is_refused_naming_the_known_ones(abstract: bool) -> None:
    meta = type("Meta", (), {"collection": "unit_typo", "oder_by": "x", "abstract": abstract})
    with pytest.raises(fm.ConfigurationError, match=r"\['oder_by'\].*'order_by'"):
        make("Typo", meta, {"x": int})


def test_bad_collection_name_is_refused() -> None:
    with pytest.raises(fm.ConfigurationError, match="collection name"):
        declare("Bad-Name", x=int)


def test_two_models_on_one_collection_are_refused() -> None:
    with pytest.raises(fm.ConfigurationError, match="already belongs to"):
        declare("unit_article", x=int)


def test_index_on_a_type_without_an_index_key_is_refused() -> None:
    with pytest.raises(fm.ConfigurationError, match="cannot be indexed"):
        declare(tags=Annotated[list[str], Indexed()])


@pytest.mark.parametrize("annotation", [str, Decimal, uuid.UUID])
def test_range_index_on_an_unscorable_type_is_refused(annotation: Any) -> None:
    with pytest.raises(fm.ConfigurationError, match="score cannot"):
        declare(x=Annotated[annotation, Indexed(range=True)])


def test_range_index_on_integers_beyond_2_53_is_refused() -> None:
    with pytest.raises(fm.ConfigurationError, match="2\\*\\*53"):
        declare(x=Annotated[int, Field(le=2**60), Indexed(range=True)])


def test_range_index_on_integers_within_2_53_is_accepted() -> None:
    declare(x=Annotated[int, Field(ge=0, le=2**50), Indexed(range=True)])


def test_order_by_must_be_a_required_scorable_field() -> None:
    meta = type("Meta", (), {"collection": "unit_bad_order", "order_by": "when"})
    with pytest.raises(fm.ConfigurationError, match="order_by"):
        make("X", meta, {"when": dt.datetime | None})


def test_version_is_a_reserved_field_name() -> None:
    with (
        pytest.warns(UserWarning, match="shadows an attribute"),  # pydantic's own notice
        pytest.raises(fm.ConfigurationError, match="reserved"),
    ):
        declare(version=int)


def test_id_must_be_a_string() -> None:
    with pytest.raises(fm.ConfigurationError, match="id: str"):
        declare(id=int)


@pytest.mark.parametrize(
    ("partition_by", "annotation"),
    [("nope", str), ("tenant", int), ("tenant", str | None), (["tenant"], str)],
)
def test_partition_by_must_name_a_required_str_field(partition_by: Any, annotation: Any) -> None:
    meta = type("Meta", (), {"collection": "unit_bad_partition", "partition_by": partition_by})
    annotations = {"id": str, "tenant": annotation}
    with pytest.raises(fm.ConfigurationError, match="partition_by must name a required `str`"):
        make("X", meta, annotations)


def test_partition_by_places_records_and_takes_unique_claims_of_its_own_field() -> None:
    meta = type("Meta", (), {"collection": "unit_tenant", "buckets": 4, "partition_by": "tenant"})
    model = make("X", meta, {"id": str, "tenant": Annotated[str, Unique()]})
    spec = model.__flue_spec__
    assert (spec.partition_by, spec.directed, spec.unique_fields) == ("tenant", True, {"tenant"})
    keys = KeySpace("p")
    record = model(id="r-1", tenant="acme")
    assert spec.keys_for(keys, record).bucket == spec.keys_of(keys, "acme").bucket
    assert len(spec.candidate_keys(keys, "r-1")) == 4
    with pytest.raises(fm.ConfigurationError, match="name the record's tenant"):
        spec.record_key(keys, "r-1")
    assert spec.record_key(keys, "r-1", "acme") == spec.keys_for(keys, record).record(
        "unit_tenant", "r-1"
    )
    other = type(
        "Meta", (), {"collection": "unit_tenant_2", "buckets": 4, "partition_by": "tenant"}
    )
    with pytest.raises(fm.ConfigurationError, match=r"Unique\(\) field\(s\) \['email'\]"):
        make("Y", other, {"id": str, "tenant": str, "email": Annotated[str, Unique()]})
    one = type("Meta", (), {"collection": "unit_tenant_3", "partition_by": "tenant"})
    single = make("Z", one, {"id": str, "tenant": str}).__flue_spec__
    assert not single.directed  # one bucket: an id names the bucket (there is one)
    assert single.candidate_keys(keys, "r-1") == [single.record_key(keys, "r-1")]


def test_compound_index_must_name_fields() -> None:
    meta = type("Meta", (), {"collection": "unit_bad_compound", "indexes": [("a", "nope")]})
    with pytest.raises(fm.ConfigurationError, match=r"Meta\.indexes"):
        make("X", meta, {"a": Annotated[str, Indexed()]})


def test_filter_on_an_unindexed_field_fails_when_built_naming_the_field() -> None:
    with pytest.raises(fm.QueryError, match=r"Article\.title has no index.*Indexed\(\)"):
        Article.find(Article.title == "x")


def test_range_on_an_equality_only_field_fails_when_built() -> None:
    with pytest.raises(fm.QueryError, match="range=True"):
        Article.find(Article.status >= "a")


def test_sort_by_an_unsortable_field_fails_when_built() -> None:
    with pytest.raises(fm.QueryError, match="Cannot sort"):
        Article.find().sort_by("-status")


def test_invalid_values_fail_when_built() -> None:
    with pytest.raises(fm.QueryError, match="not a valid value"):
        Article.find(Article.words >= "many")
    with pytest.raises(fm.QueryError, match="None"):
        Article.find(Article.status == None)  # noqa: E711


def test_conditions_refuse_python_and() -> None:
    with pytest.raises(fm.QueryError, match="&"):
        Article.find((Article.status == "a") and (Article.section == "b"))


def test_plan_drives_by_the_equality_sets_and_the_compound_index() -> None:
    keys = KeySpace("p")
    plan = plan_query(
        Article.__flue_spec__,
        keys,
        [Article.section == "news", Article.status == "live", Article.words >= 100],
        "-published_at",
    )
    assert plan.descending
    assert plan.drivers[0] == "p::{unit_article:0}:all"
    assert "p::{unit_article:0}:idx:section:bmV3cw" in plan.drivers
    assert any("section+status" in d for d in plan.drivers)
    assert [f.kind for f in plan.filters] == ["member", "member", "range"]


def test_plan_turns_ranges_on_the_sort_field_into_bounds() -> None:
    plan = plan_query(
        Article.__flue_spec__, KeySpace("p"), [Article.words > 5, Article.words <= 9], "words"
    )
    assert plan.drivers == ("p::{unit_article:0}:rng:words",)
    assert (plan.low.value, plan.low.exclusive, plan.high.value, plan.high.exclusive) == (
        5,
        True,
        9,
        False,
    )
    assert plan.filters == ()


def test_cursors_belong_to_their_query() -> None:
    cursor = encode_cursor("q1", "10.5", "id-1")
    assert decode_cursor("q1", cursor) == ("10.5", "id-1")
    with pytest.raises(fm.QueryError, match="different query"):
        decode_cursor("q2", cursor)
    with pytest.raises(fm.QueryError, match="Malformed cursor"):
        decode_cursor("q1", "!!!")


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (
            fm.Submission,
            {
                "id": "d-1",
                "session_id": "s-1",
                "kind": "dispatch",
                "status": "running",
                "sequence": 7,
                "accepted_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                "owner_id": "w",
                "lease_expires_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                "settled_at": dt.datetime(2026, 1, 3, tzinfo=dt.UTC),
                "open_session": "s-1",
            },
        ),
        (
            fm.WorkflowRun,
            None,
        ),
    ],
    ids=["submission", "run"],
)
def test_the_keys_a_stamped_field_scores_are_those_whose_score_moves_with_it(
    model: type[Model], values: dict[str, Any] | None
) -> None:
    """``scored_by`` names, without computing the entries again, exactly the entries whose
    score changes when the field does (what a counter or clock write fills in)."""
    spec = model.__flue_spec__
    keys = KeySpace("p")
    if values is None:  # every datetime and int field set
        values = {
            name: dt.datetime(2026, 1, n + 1, tzinfo=dt.UTC)
            for n, name in enumerate(f for f, c in spec.codecs.items() if c.kind == "datetime")
        }
        values.update({"id": "r-1", "workflow": "w", "status": "running"})
    entries = spec.entries(keys, values)
    candidates = {spec.order_by, *spec.range_fields} - {None}
    assert len(candidates) > 1
    for field in sorted(candidates, key=str):
        moved = values[field] + (
            dt.timedelta(seconds=1) if isinstance(values[field], dt.datetime) else 1
        )
        shifted = spec.entries(keys, {**values, field: moved})
        expected = {k for k, score in entries.items() if shifted.get(k) != score}
        assert spec.scored_by(keys, field, entries) == expected, field
