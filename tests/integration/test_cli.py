"""The operator commands, straight to the database: tables for people, JSON for scripts."""

from __future__ import annotations

import json

from broker import cli
from tests.conftest import create_upload


def run(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_uploads_list_show_and_stats(api, auth_headers, owner, sql, broker_env, capsys):
    upload = create_upload(api, auth_headers, b"an old one", filename="old.txt")
    sql(
        "UPDATE uploads SET created_at = now() - interval '3 hours', "
        "expires_at = now() - interval '1 hour' WHERE id = $1::uuid",
        upload["id"],
    )

    listed = json.loads(
        run(capsys, "uploads", "list", "--owner", owner, "--pending-longer-than", "2h", "--json")
    )
    assert [row["id"] for row in listed] == [upload["id"]]
    table = run(capsys, "uploads", "list", "--owner", owner, "--pending-longer-than", "2h")
    assert upload["id"] in table and "STUCK" in table and "3h 0m" in table
    assert upload["id"] not in run(
        capsys, "uploads", "list", "--owner", owner, "--pending-longer-than", "4h"
    )

    shown = json.loads(run(capsys, "uploads", "show", upload["id"], "--json"))
    assert shown["upload"]["filename"] == "old.txt"
    assert [h["status"] for h in shown["history"]] == ["pending"]
    assert shown["storage"] == {"exists": False}
    assert "history" in run(capsys, "uploads", "show", upload["id"])

    stats = json.loads(run(capsys, "stats", "--json"))
    assert (stats["pending"], stats["stuck"]) == (1, 1)
    assert len(stats["hourly"]) == 24 and sum(hour["created"] for hour in stats["hourly"]) == 1
    assert "stuck (past deadline)" in run(capsys, "stats")


def test_a_bad_duration_is_refused_with_a_message(broker_env, capsys):
    assert cli.main(["uploads", "list", "--pending-longer-than", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
