"""Finding uploads on real services: an owner's by metadata, anyone's by part of a filename
(admin API, CLI, /ops)."""

from __future__ import annotations

import json
import uuid

import markupsafe
import pytest

from broker import auth, cli
from tests.conftest import create_upload


@pytest.fixture
def admin_headers(settings):
    return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'op', admin=True)}"}


def all_pages(api, path, headers, limit=2, **params):
    """Every id a listing returns, following next_cursor with the same filters."""
    ids, cursor = [], None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = api.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        ids += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            return ids


# ---------------------------------------------------------------- metadata filter


def test_uploads_are_found_by_one_or_two_metadata_keys_exactly(api, auth_headers, token_for):
    def made(metadata, headers=auth_headers):
        return create_upload(api, headers, b"x", metadata=metadata)["id"]

    post_42 = made({"post_id": "42", "tenant": "acme"})
    post_7 = made({"post_id": "7", "tenant": "acme"})
    post_42_other_tenant = made({"post_id": "42", "tenant": "globex"})
    made({"post_id": "420"})
    made({})
    theirs = made({"post_id": "42", "tenant": "acme"}, token_for(f"other-{uuid.uuid4()}"))

    def found(**params):
        return all_pages(api, "/v1/uploads", auth_headers, limit=20, **params)

    assert found(**{"metadata.post_id": "42"}) == [post_42_other_tenant, post_42]
    assert found(**{"metadata.post_id": "42", "metadata.tenant": "acme"}) == [post_42]
    assert found(**{"metadata.tenant": "acme"}) == [post_7, post_42]
    assert found(**{"metadata.post_id": "4"}) == []  # exact, not a prefix
    assert found(**{"metadata.post_id": "42", "metadata.tenant": "initech"}) == []
    assert found(**{"metadata.nobody_sets_this": "42"}) == []
    assert theirs not in found(**{"metadata.post_id": "42"})
    # With the status filter too, and a key holding dots and dashes.
    assert found(**{"metadata.post_id": "42", "status": "deleted"}) == []
    dotted = made({"app.ref-id": "a b/c"})
    assert found(**{"metadata.app.ref-id": "a b/c"}) == [dotted]


def test_the_metadata_filter_pages_through_every_match_newest_first(api, auth_headers):
    matching = []
    for index in range(5):
        matching.append(create_upload(api, auth_headers, b"x", metadata={"post_id": "42"})["id"])
        create_upload(api, auth_headers, b"x", metadata={"post_id": str(index)})
    for limit in (1, 2, 5):
        listed = all_pages(
            api, "/v1/uploads", auth_headers, limit=limit, **{"metadata.post_id": "42"}
        )
        assert listed == list(reversed(matching))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("metadata.post%20id=42", "metadata.post id"),
        ("metadata.=42", "metadata."),
        (f"metadata.{'k' * 65}=1", f"metadata.{'k' * 65}"),
        (f"metadata.post_id={'v' * 513}", "metadata.post_id"),
        ("metadata.post_id=1&metadata.post_id=2", "metadata.post_id"),
        ("&".join(f"metadata.k{i}=v" for i in range(17)), "metadata"),
    ],
)
def test_a_bad_metadata_filter_is_a_validation_error(api, auth_headers, query, field):
    response = api.get(f"/v1/uploads?{query}", headers=auth_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "ERR_VALIDATION"
    assert [(d["in"], d["field"]) for d in error["details"]] == [("query", field)]


def test_openapi_documents_the_metadata_filter(api):
    spec = api.get("/openapi.json").json()
    parameters = {p["name"]: p for p in spec["paths"]["/v1/uploads"]["get"]["parameters"]}
    metadata = parameters["metadata"]
    assert (metadata["in"], metadata["style"], metadata["explode"]) == ("query", "form", True)
    (pattern,) = metadata["schema"]["patternProperties"]
    assert pattern == r"^metadata\.[A-Za-z0-9_.-]{1,64}$"
    assert "metadata.post_id=42" in metadata["description"]
    assert {"status", "limit", "cursor"} <= set(parameters)
    admin = {p["name"] for p in spec["paths"]["/v1/admin/uploads"]["get"]["parameters"]}
    assert "q" in admin


# ---------------------------------------------------------------- filename search


FILENAMES = [
    "Holiday Photo.JPG",
    "holiday-2.png",
    "HOLI.txt",
    "report 100%.pdf",
    "report 1000.pdf",
    "abc_def.txt",
    "abcxdef.txt",
    "notes.txt",
]


@pytest.fixture
def named(api, auth_headers):
    """One upload per name of FILENAMES, oldest first: {filename: id}."""
    return {
        name: create_upload(api, auth_headers, b"x" * (i + 1), filename=name)["id"]
        for i, name in enumerate(FILENAMES)
    }


def search(api, headers, q, **params):
    return all_pages(api, "/v1/admin/uploads", headers, limit=2, q=q, **params)


def test_the_filename_search_is_partial_and_ignores_case(api, admin_headers, named):
    holidays = [named["HOLI.txt"], named["holiday-2.png"], named["Holiday Photo.JPG"]]
    assert search(api, admin_headers, "holi") == holidays
    assert search(api, admin_headers, "HOLI") == holidays
    assert search(api, admin_headers, "oLiDaY") == holidays[1:]
    assert search(api, admin_headers, "photo.jpg") == [named["Holiday Photo.JPG"]]
    assert search(api, admin_headers, "day Pho") == [named["Holiday Photo.JPG"]]
    assert search(api, admin_headers, "vacation") == []


def test_the_search_texts_wildcards_and_backslash_match_only_themselves(api, admin_headers, named):
    assert search(api, admin_headers, "100%") == [named["report 100%.pdf"]]
    assert search(api, admin_headers, "100%.PDF") == [named["report 100%.pdf"]]
    assert search(api, admin_headers, "abc_def") == [named["abc_def.txt"]]
    # Filenames cannot hold a backslash; in the text it is a plain character too, never an
    # escape of what follows (nor a pattern ending in an escape: a database error).
    assert search(api, admin_headers, "abc\\_def") == []
    assert search(api, admin_headers, "abc\\") == []


def test_the_search_combines_with_the_status_filter(api, auth_headers, admin_headers, named):
    deleted = named["holiday-2.png"]
    assert api.delete(f"/v1/uploads/{deleted}", headers=auth_headers).status_code == 200
    assert search(api, admin_headers, "holi", status="deleted") == [deleted]
    assert search(api, admin_headers, "holi", status="pending") == [
        named["HOLI.txt"],
        named["Holiday Photo.JPG"],
    ]
    assert search(api, admin_headers, "notes", status="deleted") == []


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "-size", "size"])
def test_the_search_pages_in_every_sort_order(api, admin_headers, named, sort):
    # Sizes grow with the order of creation (1, 2, 3 ... bytes), so both keys agree.
    oldest_first = [named[n] for n in FILENAMES if n.endswith(".txt")]
    expected = oldest_first if sort in ("created_at", "size") else list(reversed(oldest_first))
    assert search(api, admin_headers, ".TXT", sort=sort) == expected


@pytest.mark.parametrize("q", ["", "ph", "%", "a_b", "%%%", "x" * 256])
def test_a_search_the_index_cannot_serve_is_a_validation_error(api, admin_headers, q):
    """Fewer than 3 letters or digits in a row: a trigram index cannot narrow the search,
    which would read every row; it is refused, never answered in seconds."""
    response = api.get("/v1/admin/uploads", params={"q": q}, headers=admin_headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "ERR_VALIDATION"
    assert [(d["in"], d["field"]) for d in error["details"]] == [("query", "q")]


def test_the_cli_searches_filenames(named, broker_env, capsys):
    assert cli.main(["uploads", "list", "--search", "holi", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["filename"] for row in listed] == ["HOLI.txt", "holiday-2.png", "Holiday Photo.JPG"]
    assert cli.main(["uploads", "list", "--search", "100%"]) == 0
    table = capsys.readouterr().out
    assert named["report 100%.pdf"] in table and named["report 1000.pdf"] not in table
    assert cli.main(["uploads", "list", "--search", "ph"]) == 2
    assert "3 letters or digits in a row" in capsys.readouterr().err


# ---------------------------------------------------------------- /ops search box


def test_the_ops_search_box_shows_what_it_found(api, admin_headers, named):
    response = api.get("/ops", params={"q": "holi"}, headers=admin_headers)
    assert response.status_code == 200
    assert "form-action 'self'" in response.headers["content-security-policy"]
    assert 'action="/ops" role="search"' in response.text
    assert 'name="q" type="search" maxlength="255" value="holi"' in response.text
    results = response.text.split('id="search-results"', 1)[1].split("</table>", 1)[0]
    rows = [part.split('"', 1)[0] for part in results.split('data-upload-id="')[1:]]
    assert rows == [named["HOLI.txt"], named["holiday-2.png"], named["Holiday Photo.JPG"]]
    assert "3 uploads whose filename contains “holi”, newest first." in response.text

    plain = api.get("/ops", params={"q": " "}, headers=admin_headers)
    assert plain.status_code == 200 and "search-results" not in plain.text
    refused = api.get("/ops", params={"q": "ph"}, headers=admin_headers)
    assert refused.status_code == 200 and "search-results" not in refused.text
    assert "“ph” cannot be searched for: a search must hold 3 letters" in refused.text


def test_the_ops_search_escapes_hostile_text_and_filenames(api, auth_headers, admin_headers):
    hostile = '"><script>alert(1)<img src=x onerror=alert(2)>.txt'
    upload_id = create_upload(api, auth_headers, b"x", filename=hostile)["id"]
    response = api.get("/ops", params={"q": '"><script>'}, headers=admin_headers)
    assert response.status_code == 200
    assert "<script>" not in response.text and "<img" not in response.text
    assert f'value="{markupsafe.escape(chr(34) + "><script>")}"' in response.text
    results = response.text.split('id="search-results"', 1)[1].split("</table>", 1)[0]
    assert upload_id in results and markupsafe.escape(hostile) in results
