"""Named parameters of queries.sql become asyncpg's $n, and are bound by name."""

from __future__ import annotations

import pytest

from broker.adapters import db
from broker.domain.model import NewUploadRecord, QuotaLimits


def test_named_parameters_become_numbered_once_each_and_casts_stay():
    query = db.Query.compile("q", "SELECT :a::bigint, ':b', x::text, :a, coalesce(:b, :c)")
    assert query.sql == "SELECT $1::bigint, ':b', x::text, $1, coalesce($2, $3)"
    assert query.parameters == ("a", "b", "c")
    assert query.arguments({"c": 3, "a": 1, "b": 2}) == (1, 2, 3)


@pytest.mark.parametrize("values", [{"a": 1}, {"a": 1, "b": 2, "typo": 3}, {"a": 1, "x": 2}])
def test_a_missing_or_unknown_parameter_is_refused(values):
    query = db.Query.compile("q", "SELECT :a, :b")
    with pytest.raises(TypeError, match="takes"):
        query.arguments(values)


def test_the_inserts_bind_every_parameter_from_the_record_and_quota():
    queries = db.load_queries()
    plain = queries["insert_upload"].binder(NewUploadRecord._fields)
    within = queries["insert_upload_within_quota"].binder(
        NewUploadRecord._fields + QuotaLimits._fields
    )
    record = NewUploadRecord(*(f"value-{name}" for name in NewUploadRecord._fields))
    quota = QuotaLimits(1, 2, 3, 4)
    assert plain(record) == tuple(f"value-{p}" for p in queries["insert_upload"].parameters)
    names = queries["insert_upload_within_quota"].parameters
    bound = dict(zip(names, within((*record, *quota)), strict=True))
    assert bound["owner"] == "value-owner" and bound["global_count"] == 4


def test_a_binder_without_a_field_the_query_needs_is_refused():
    with pytest.raises(TypeError, match="needs"):
        db.load_queries()["insert_upload"].binder(NewUploadRecord._fields[1:])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("holi", "%holi%"),
        ("100%", "%100\\%%"),
        ("a_b", "%a\\_b%"),
        ("back\\slash", "%back\\\\slash%"),
        ("\\%_", "%\\\\\\%\\_%"),
    ],
)
def test_a_search_text_becomes_a_like_pattern_matching_it_literally(text, pattern):
    from broker.adapters import queries

    assert queries.like_pattern(text) == pattern
