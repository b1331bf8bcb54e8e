"""The operator commands, straight to the database: tables for people, JSON for scripts."""

from __future__ import annotations

import json

import pytest

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


# ---------------------------------------------------------------- broker webhooks

HOOK_URL = "https://app.example.test/hooks/broker"


def fails(capsys, code: int, *argv: str) -> str:
    assert cli.main(list(argv)) == code
    return capsys.readouterr().err


def an_upload_change(sql) -> str:
    """An upload and its first history row, written as the broker writes them: the outbox
    trigger queues its upload.created delivery (no broker, so no sender, runs here)."""
    (row,) = sql(
        "WITH made AS (INSERT INTO uploads (id, owner, filename, content_type, size, "
        "bucket, object_key, expires_at) VALUES (gen_random_uuid(), 'cli-owner', 'a.txt', "
        "'text/plain', 1, 'b', "
        "'uploads/' || gen_random_uuid(), now() + interval '1 hour') RETURNING id) "
        "INSERT INTO upload_history (upload_id, status, actor) "
        "SELECT id, 'pending', 'owner' FROM made RETURNING upload_id::text AS id"
    )
    return row["id"]


def test_webhooks_add_list_rotate_and_disable(broker_env, capsys):
    added = json.loads(
        run(capsys, "webhooks", "add", HOOK_URL, "--event-type", "upload.finalized",
            "--description", "the app", "--json")
    )  # fmt: skip
    endpoint_id, secret = added["id"], added["secret"]
    assert secret.startswith("whsec_") and added["event_types"] == ["upload.finalized"]
    assert added["enabled"] is True

    # The table shows the secret once too, and says so; the listing never shows it.
    table = run(capsys, "webhooks", "add", HOOK_URL + "/2")
    assert "whsec_" in table and "shown this once" in table
    listed = json.loads(run(capsys, "webhooks", "list", "--json"))
    assert [e["url"] for e in listed] == [HOOK_URL, HOOK_URL + "/2"]
    assert all("secret" not in e for e in listed)
    listing = run(capsys, "webhooks", "list")
    assert endpoint_id in listing and "whsec_" not in listing and "the app" in listing

    rotated = json.loads(run(capsys, "webhooks", "rotate", endpoint_id, "--json"))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    assert rotated["previous_secret_expires_at"] is not None

    assert "is disabled" in run(capsys, "webhooks", "disable", endpoint_id)
    shown = json.loads(run(capsys, "webhooks", "list", "--json"))[0]
    assert shown["enabled"] is False and "(cli)" in shown["disabled_reason"]
    assert "is enabled" in run(capsys, "webhooks", "enable", endpoint_id)


def test_webhooks_test_deliveries_replay_and_retry(broker_env, sql, capsys):
    endpoint_id = json.loads(run(capsys, "webhooks", "add", HOOK_URL, "--json"))["id"]
    other_id = json.loads(run(capsys, "webhooks", "add", HOOK_URL + "/other", "--json"))["id"]

    queued = json.loads(run(capsys, "webhooks", "test", endpoint_id, "--json"))
    assert (queued["type"], queued["status"]) == ("webhook.test", "pending")
    assert queued["webhook_id"].startswith("msg_test_")
    assert "queued webhook.test delivery" in run(capsys, "webhooks", "test", other_id)

    upload_id = an_upload_change(sql)  # one upload.created delivery per endpoint

    def deliveries(*filters: str) -> list[dict]:
        return json.loads(run(capsys, "webhooks", "deliveries", *filters, "--json"))

    assert len(deliveries()) == 4
    mine = deliveries("--endpoint", endpoint_id)
    assert [d["type"] for d in mine] == ["upload.created", "webhook.test"]  # newest first
    assert {d["endpoint_id"] for d in deliveries("--upload", upload_id)} == {
        endpoint_id,
        other_id,
    }
    assert [d["id"] for d in deliveries("--type", "webhook.test", "--limit", "1")] == [
        deliveries("--type", "webhook.test")[0]["id"]
    ]
    assert deliveries("--status", "dead") == []
    table = run(capsys, "webhooks", "deliveries", "--endpoint", endpoint_id)
    assert "upload.created" in table and upload_id in table and "pending" in table

    # Delivered an hour ago, and one dead: replay --since 2h queues both again, same ids.
    created, test = mine
    sql(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), "
        "attempts = 1, created_at = now() - interval '1 hour' WHERE id = $1",
        created["id"],
    )
    sql(
        "UPDATE webhook_deliveries SET status = 'dead', attempts = 10, last_status = 500, "
        "last_error = 'HTTP 500' WHERE id = $1",
        test["id"],
    )
    assert [d["id"] for d in deliveries("--status", "dead")] == [test["id"]]
    assert "HTTP 500" in run(capsys, "webhooks", "deliveries", "--status", "dead")
    assert (
        json.loads(run(capsys, "webhooks", "replay", endpoint_id, "--since", "30m", "--json"))[
            "queued"
        ]
        == 1
    )  # the dead one; the delivered one changed an hour ago
    assert "queued 1 deliveries again" in run(
        capsys, "webhooks", "replay", endpoint_id, "--since", "2h"
    )
    again = {d["id"]: d for d in deliveries("--endpoint", endpoint_id)}
    assert again[created["id"]]["status"] == "pending"
    assert again[created["id"]]["webhook_id"] == created["webhook_id"]
    assert again[test["id"]]["webhook_id"] == test["webhook_id"]

    # retry: a dead delivery goes back to pending with a fresh schedule; others are refused.
    sql("UPDATE webhook_deliveries SET status = 'dead', attempts = 10 WHERE id = $1", test["id"])
    retried = json.loads(run(capsys, "webhooks", "retry", str(test["id"]), "--json"))
    assert (retried["status"], retried["attempts"]) == ("pending", 0)
    assert retried["webhook_id"] == test["webhook_id"]
    assert "only a dead delivery" in fails(capsys, 1, "webhooks", "retry", str(test["id"])).lower()
    assert "broker:" in fails(capsys, 1, "webhooks", "retry", "999999")


def test_webhooks_bad_input_exits_2_and_domain_errors_exit_1(broker_env, capsys):
    endpoint_id = json.loads(run(capsys, "webhooks", "add", HOOK_URL, "--json"))["id"]
    assert "not a duration" in fails(
        capsys, 2, "webhooks", "replay", endpoint_id, "--since", "yesterday"
    )
    assert "--limit" in fails(capsys, 2, "webhooks", "deliveries", "--limit", "0")
    assert "https" in fails(capsys, 1, "webhooks", "add", "http://app.example.test/hook")
    assert "broker:" in fails(capsys, 1, "webhooks", "test", "00000000-0000-0000-0000-000000000000")
    for argv, message in (
        (["webhooks", "rotate", "not-an-id"], "'not-an-id' is not an id (a UUID)"),
        (["webhooks", "add", HOOK_URL, "--event-type", "upload.nope"], "invalid choice"),
        (["webhooks", "deliveries", "--status", "lost"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err
