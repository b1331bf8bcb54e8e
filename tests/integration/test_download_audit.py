"""The download audit on real services: what a download records, what a refusal does not,
the operators' listing, the CLI's export and the retention."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import datetime, timedelta

import pytest

from broker import auth, cli
from tests.conftest import create_upload, put_bytes, wait_for_status


@pytest.fixture
def admin_headers(settings):
    return {"Authorization": f"Bearer {auth.issue_token(settings.jwt_secret, 'op', admin=True)}"}


def finalized_upload(api, headers, data: bytes = b"audited bytes") -> dict:
    upload = create_upload(api, headers, data, filename="audited.txt")
    assert put_bytes(upload, data).status_code == 200
    return wait_for_status(api, headers, upload["id"], "finalized")


def download(api, headers, upload_id: str, request_id: str | None = None):
    extra = {"X-Request-ID": request_id} if request_id else {}
    return api.get(f"/v1/uploads/{upload_id}/download", headers={**headers, **extra})


def audit_rows(sql) -> list:
    return sql("SELECT upload_id::text AS upload_id FROM download_audit")


def test_a_download_records_who_when_for_how_long_and_from_where(
    api, owner, auth_headers, admin_headers, settings, sql
):
    upload = finalized_upload(api, auth_headers)

    link = download(api, auth_headers, upload["id"], request_id="audit-req-1")

    assert link.status_code == 200
    (row,) = api.get(f"/v1/admin/uploads/{upload['id']}/downloads", headers=admin_headers).json()[
        "items"
    ]
    assert row["upload_id"] == upload["id"] and row["requester"] == owner
    assert row["request_id"] == "audit-req-1" == link.headers["x-request-id"]
    assert row["client_address"] == "127.0.0.1"
    assert row["expires_in_seconds"] == settings.download_url_ttl_seconds
    url_expires = datetime.fromisoformat(row["url_expires_at"])
    assert abs(url_expires - datetime.fromisoformat(link.json()["expires_at"])) < timedelta(
        seconds=2
    )
    (now,) = sql("SELECT now() AS at")
    issued = datetime.fromisoformat(row["issued_at"])
    assert issued.utcoffset() == timedelta(0) and timedelta(0) <= now["at"] - issued < timedelta(
        seconds=30
    )


def test_refused_downloads_record_nothing(api, auth_headers, token_for, sql):
    pending = create_upload(api, auth_headers, b"never sent")
    finalized = finalized_upload(api, auth_headers)

    assert download(api, auth_headers, str(uuid.uuid4())).status_code == 404
    assert download(api, token_for("mallory"), finalized["id"]).status_code == 404
    refused = download(api, auth_headers, pending["id"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "ERR_UPLOAD_NOT_FINALIZED"

    assert audit_rows(sql) == []


def test_operators_page_through_downloads_and_see_them_in_the_upload_view(
    api, auth_headers, admin_headers
):
    upload = finalized_upload(api, auth_headers)
    request_ids = [f"req-{n}" for n in range(7)]
    for request_id in request_ids:
        assert download(api, auth_headers, upload["id"], request_id).status_code == 200

    seen, cursor = [], None
    while True:
        page = api.get(
            f"/v1/admin/uploads/{upload['id']}/downloads",
            params={"limit": 3, **({"cursor": cursor} if cursor else {})},
            headers=admin_headers,
        ).json()
        seen += [item["request_id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break

    assert seen == list(reversed(request_ids))
    view = api.get(f"/v1/admin/uploads/{upload['id']}", headers=admin_headers).json()
    assert view["downloads"]["count"] == 7
    assert [d["request_id"] for d in view["downloads"]["latest"]] == seen[:5]
    assert view["downloads"]["last_issued_at"] == view["downloads"]["latest"][0]["issued_at"]
    assert view["downloads"]["listing"] == f"/v1/admin/uploads/{upload['id']}/downloads"
    page = api.get("/ops", headers=admin_headers)
    latest = page.text.split('id="latest-downloads"', 1)[1].split("</table>", 1)[0]
    assert upload["id"] in latest
    assert [latest.index(f">{request_id}<") for request_id in seen] == sorted(
        latest.index(f">{request_id}<") for request_id in seen
    )


def test_the_downloads_route_refuses_owners_bad_cursors_and_unknown_uploads(
    api, auth_headers, admin_headers
):
    upload = finalized_upload(api, auth_headers)
    path = f"/v1/admin/uploads/{upload['id']}/downloads"

    assert api.get(path).status_code == 401
    forbidden = api.get(path, headers=auth_headers)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "ERR_FORBIDDEN"
    past_bigint = json.dumps(["downloads", "2026-11-29T12:00:00+00:00", 10**25]).encode()
    for cursor in ("bm90LWEtY3Vyc29y", base64.urlsafe_b64encode(past_bigint).decode()):
        bad = api.get(path, params={"cursor": cursor}, headers=admin_headers)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "ERR_INVALID_CURSOR"
    unknown = api.get(f"/v1/admin/uploads/{uuid.uuid4()}/downloads", headers=admin_headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "ERR_UPLOAD_NOT_FOUND"


def run(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_the_cli_exports_downloads_since_a_time_as_csv_and_a_table(
    api, owner, auth_headers, sql, broker_env, capsys
):
    first = finalized_upload(api, auth_headers, b"first file")
    second = finalized_upload(api, auth_headers, b"second file")
    download(api, auth_headers, first["id"], "old-one")
    download(api, auth_headers, first["id"], "recent-first")
    download(api, auth_headers, second["id"], "recent-second")
    sql(
        "UPDATE download_audit SET issued_at = now() - interval '2 days' WHERE request_id = $1",
        "old-one",
    )

    rows = list(
        csv.DictReader(io.StringIO(run(capsys, "audit", "downloads", "--since", "24h", "--csv")))
    )
    assert [r["request_id"] for r in rows] == ["recent-second", "recent-first"]
    assert {r["upload_id"] for r in rows} == {first["id"], second["id"]}
    assert {r["requester"] for r in rows} == {owner}
    assert all(datetime.fromisoformat(r["issued_at"]).utcoffset() == timedelta(0) for r in rows)
    assert all(r["client_address"] == "127.0.0.1" for r in rows)

    of_first = json.loads(
        run(capsys, "audit", "downloads", "--since", "3d", "--upload", first["id"], "--json")
    )
    assert [r["request_id"] for r in of_first] == ["recent-first", "old-one"]

    shown = run(capsys, "audit", "downloads", "--since", "24h")
    assert second["id"] in shown and "recent-second" in shown and "old-one" not in shown
    assert "download URLs issued: 2" in run(capsys, "uploads", "show", first["id"])


def test_the_cli_refuses_a_bad_since_with_a_message(broker_env, capsys):
    assert cli.main(["audit", "downloads", "--since", "yesterday"]) == 2
    assert "'yesterday' is not a duration" in capsys.readouterr().err
    assert cli.main(["audit", "downloads", "--since", "99999999d"]) == 2
    assert "more than 100 years" in capsys.readouterr().err


def test_retention_deletes_only_rows_older_than_its_days(
    api, auth_headers, sql, broker_env, capsys
):
    upload = finalized_upload(api, auth_headers)
    for request_id, age in (("91-days", 91), ("89-days", 89), ("today", 0)):
        download(api, auth_headers, upload["id"], request_id)
        sql(
            "UPDATE download_audit SET issued_at = now() - make_interval(days => $2)"
            " WHERE request_id = $1",
            request_id,
            age,
        )

    report = json.loads(run(capsys, "reconcile", "--json"))

    assert report["counts"]["download_audit_purged"] == 1
    kept = sql("SELECT request_id FROM download_audit ORDER BY issued_at")
    assert [r["request_id"] for r in kept] == ["89-days", "today"]
