"""Trusting what was stored, against real MinIO, PostgreSQL and clamd: content sniffing at
finalization (MinIO's webhook drives it), and malware scanning with quarantine (scan rounds
of a MalwareScanner on the broker's database, storage and a local clamd)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from broker import auth, cli, config
from broker.adapters import db, queries, scanners, storage
from broker.dev import clamd as local_clamd
from broker.domain.model import Outcome
from broker.domain.policies import load_policies
from broker.flows import scanning
from tests import clamd, samples
from tests.conftest import create_upload, put_bytes, wait_for_status, wait_until_object_gone
from tests.integration import test_companion as companion
from tests.integration import test_multipart as multipart
from tests.integration.test_events import Stream

# -------------------------------------------------------------------- content sniffing


def upload(api, headers, data: bytes, content_type: str, **fields: Any) -> dict[str, Any]:
    created = create_upload(api, headers, data, content_type=content_type, **fields)
    assert put_bytes(created, data).status_code == 200
    return created


def test_png_bytes_declared_jpeg_are_rejected_and_deleted(api, auth_headers, s3, settings):
    created = upload(api, auth_headers, samples.PNG, "image/jpeg", filename="photo.jpg")
    record = wait_for_status(api, auth_headers, created["id"], "rejected")
    assert record["reject_reason"] == "content_mismatch"
    assert record["detected_content_type"] == "image/png"
    wait_until_object_gone(s3, settings.s3_bucket, created["key"])
    admin = {"authorization": f"Bearer {admin_token(settings)}"}
    history = api.get(f"/v1/admin/uploads/{created['id']}", headers=admin).json()["history"]
    assert history[-1]["detail"]["declared"] == "image/jpeg"
    assert history[-1]["detail"]["detected"] == "image/png"


def test_a_real_jpeg_is_finalized_with_its_detected_type(api, auth_headers):
    created = upload(api, auth_headers, samples.JPEG, "image/jpeg", filename="photo.jpg")
    record = wait_for_status(api, auth_headers, created["id"], "finalized")
    assert record["detected_content_type"] == "image/jpeg"


def test_html_declared_png_is_rejected(api, auth_headers):
    created = upload(api, auth_headers, samples.HTML_WITH_SCRIPT, "image/png", filename="a.png")
    record = wait_for_status(api, auth_headers, created["id"], "rejected")
    assert (record["reject_reason"], record["detected_content_type"]) == (
        "content_mismatch",
        "text/html",
    )


def test_text_and_undetectable_binary_follow_the_documented_rules(api, auth_headers):
    csv = upload(api, auth_headers, b"id,name\n1,ada\n2,alan\n", "text/plain")
    binary = upload(api, auth_headers, os.urandom(2048), "application/octet-stream")
    assert wait_for_status(api, auth_headers, csv["id"], "finalized")
    assert wait_for_status(api, auth_headers, binary["id"], "finalized")


def admin_token(settings: config.Settings) -> str:
    return auth.issue_token(settings.jwt_secret, "root", admin=True)


# -------------------------------------------------------------------- malware scanning


class Scanners:
    """MalwareScanner rounds on the test broker's database and bucket, with real clamd."""

    def __init__(self, settings: config.Settings, database: db.Database, address: str) -> None:
        self.settings, self.database, self.address = settings, database, address

    def scanner(self, address: str | None = None) -> scanning.MalwareScanner:
        return scanning.MalwareScanner(
            queries.Queries(self.database),
            storage.Storage(self.settings),
            scanners.ClamdScanner(address or self.address, timeout_seconds=5),
            load_policies(self.settings),
            None,
            scanning.ScannerLimits(lease_seconds=30, concurrency=4),
        )

    async def until_idle(self, scanner: scanning.MalwareScanner) -> list[Outcome]:
        """Rounds until one claims nothing (a retried job waits for its next attempt)."""
        outcomes: list[Outcome] = []
        while found := await scanner.scan_due():
            outcomes += found
        return outcomes


@asynccontextmanager
async def scanners_on(settings: config.Settings, address: str) -> AsyncIterator[Scanners]:
    database = await db.Database.connect(settings.database_url, min_size=1, max_size=4)
    try:
        yield Scanners(settings, database, address)
    finally:
        await database.close()


def later(seconds: float) -> Callable[[], datetime]:
    """A scanner's clock `seconds` ahead of now (a job retried or leased until then is due)."""
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def scanned_upload(api, headers, data: bytes, policy: str = "scanned") -> dict[str, Any]:
    created = upload(api, headers, data, "text/plain", policy=policy, filename="report.txt")
    wait_for_status(api, headers, created["id"], "scanning")
    return created


def test_an_infected_file_is_quarantined_and_a_clean_one_finalized(
    api, auth_headers, settings, clamd_address
):
    infected = scanned_upload(api, auth_headers, b"invoice " + samples.EICAR + b" end")
    clean = scanned_upload(api, auth_headers, b"quarterly figures, all fine\n")
    refused = api.get(f"/v1/uploads/{infected['id']}/download", headers=auth_headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "ERR_UPLOAD_SCANNING")

    async def scan() -> list[Outcome]:
        async with scanners_on(settings, clamd_address) as found:
            return await found.until_idle(found.scanner())

    assert sorted(run(scan())) == sorted([Outcome.QUARANTINED, Outcome.FINALIZED])
    record = wait_for_status(api, auth_headers, infected["id"], "quarantined")
    assert (record["scan_result"], record["scan_signature"]) == (
        "infected",
        local_clamd.TEST_SIGNATURE,
    )
    refused = api.get(f"/v1/uploads/{infected['id']}/download", headers=auth_headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (
        409,
        "ERR_UPLOAD_QUARANTINED",
    )
    record = wait_for_status(api, auth_headers, clean["id"], "finalized")
    assert record["scan_result"] == "clean"
    link = api.get(f"/v1/uploads/{clean['id']}/download", headers=auth_headers).json()
    assert httpx.get(link["url"]).content == b"quarterly figures, all fine\n"


def test_an_admin_releases_a_quarantined_file_with_a_reason(
    api, auth_headers, settings, clamd_address
):
    infected = scanned_upload(api, auth_headers, samples.EICAR)

    async def scan() -> None:
        async with scanners_on(settings, clamd_address) as found:
            await found.until_idle(found.scanner())

    run(scan())
    wait_for_status(api, auth_headers, infected["id"], "quarantined")
    admin = {"authorization": f"Bearer {admin_token(settings)}"}
    path = f"/v1/admin/uploads/{infected['id']}"
    assert api.post(f"{path}/release", json={}, headers=admin).status_code == 422
    released = api.post(f"{path}/release", json={"reason": "test file"}, headers=admin)
    assert released.status_code == 200 and released.json()["status"] == "finalized"
    again = api.post(f"{path}/release", json={"reason": "twice"}, headers=admin)
    assert again.json()["error"]["code"] == "ERR_UPLOAD_NOT_QUARANTINED"
    last = api.get(path, headers=admin).json()["history"][-1]
    assert (last["status"], last["actor"], last["detail"]) == (
        "finalized",
        "admin:root",
        {"reason": "test file"},
    )
    assert api.get(f"/v1/uploads/{infected['id']}/download", headers=auth_headers).is_success


def test_an_admin_deletes_a_quarantined_file_and_its_object(
    api, auth_headers, settings, clamd_address, s3
):
    infected = scanned_upload(api, auth_headers, samples.EICAR)

    async def scan() -> None:
        async with scanners_on(settings, clamd_address) as found:
            await found.until_idle(found.scanner())

    run(scan())
    wait_for_status(api, auth_headers, infected["id"], "quarantined")
    admin = {"authorization": f"Bearer {admin_token(settings)}"}
    path = f"/v1/admin/uploads/{infected['id']}/delete"
    deleted = api.post(path, json={"reason": "malware"}, headers=admin)
    assert deleted.status_code == 200
    assert (deleted.json()["outcome"], deleted.json()["upload"]["status"]) == (
        "deleted",
        "deleted",
    )
    wait_until_object_gone(s3, settings.s3_bucket, infected["key"])
    last = api.get(f"/v1/admin/uploads/{infected['id']}", headers=admin).json()["history"][-1]
    assert (last["actor"], last["detail"]) == ("admin:root", {"reason": "malware"})


def test_clamd_down_keeps_fail_closed_uploads_scanning_until_it_is_back(
    api, auth_headers, settings, clamd_service, clamd_address
):
    closed = scanned_upload(api, auth_headers, b"closed policy file\n")
    opened = scanned_upload(api, auth_headers, b"open policy file\n", policy="scanned_open")

    async def scan_while_down() -> list[Outcome]:
        async with scanners_on(settings, clamd_address) as found:
            with clamd.down(clamd_service):
                return await found.until_idle(found.scanner())

    assert sorted(run(scan_while_down())) == sorted([Outcome.SCAN_RETRY, Outcome.SCAN_SKIPPED])
    assert wait_for_status(api, auth_headers, opened["id"], "finalized")["scan_result"] == (
        "skipped"
    )
    assert api.get(f"/v1/uploads/{closed['id']}", headers=auth_headers).json()["status"] == (
        "scanning"
    )

    async def scan_when_back() -> list[Outcome]:
        async with scanners_on(settings, clamd_address) as found:
            scanner = found.scanner()
            scanner.clock = later(6)  # the retry is due 5 s after the failed attempt
            return await found.until_idle(scanner)

    assert run(scan_when_back()) == [Outcome.FINALIZED]
    assert wait_for_status(api, auth_headers, closed["id"], "finalized")["scan_result"] == "clean"


def test_two_scanners_never_scan_one_file_twice(api, auth_headers, settings, clamd_address):
    uploads = [scanned_upload(api, auth_headers, f"file {n}\n".encode()) for n in range(6)]

    async def scan() -> list[Outcome]:
        async with scanners_on(settings, clamd_address) as found:
            first, second = found.scanner(), found.scanner()
            results = await asyncio.gather(found.until_idle(first), found.until_idle(second))
            return results[0] + results[1]

    assert run(scan()) == [Outcome.FINALIZED] * 6
    for created in uploads:
        history = api.get(f"/v1/uploads/{created['id']}", headers=auth_headers).json()
        assert history["status"] == "finalized"


def test_a_scan_cut_by_sigkill_is_scanned_again_and_ends_in_one_final_state(
    api, auth_headers, settings, clamd_address, broker_env, sql
):
    """A broker process scanning (a command engine that never answers) is SIGKILLed; the job's
    lease runs out and a scanner started afterwards gives the one verdict."""
    created = scanned_upload(api, auth_headers, b"scan me\n")
    env = {
        **os.environ,  # broker_env points every BROKER_* setting at the test services
        # Never answers within the 1 s timeout, and ends by itself: the broker that would
        # kill it at its timeout is SIGKILLed first.
        "BROKER_SCAN_COMMAND": f"{sys.executable} -c 'import time; time.sleep(20)'",
        "BROKER_CLAMD_ADDRESS": "",
        "BROKER_SCAN_TIMEOUT_SECONDS": "1",
        "BROKER_SCANNER": "true",
        "BROKER_WEBHOOK_SENDER": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not sql("SELECT 1 FROM scan_jobs WHERE lease_owner IS NOT NULL"):
            assert time.monotonic() < deadline, "the broker never claimed the scan job"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert api.get(f"/v1/uploads/{created['id']}", headers=auth_headers).json()["status"] == (
        "scanning"
    )

    async def rescan() -> list[Outcome]:
        async with scanners_on(settings, clamd_address) as found:
            scanner = found.scanner()
            scanner.clock = later(40)  # past the killed process's lease (2 x 1 s + 30 s)
            return await found.until_idle(scanner)

    assert run(rescan()) == [Outcome.FINALIZED]
    history = sql(
        "SELECT status FROM upload_history WHERE upload_id = $1 ORDER BY id", created["id"]
    )
    assert [row["status"] for row in history] == ["pending", "scanning", "finalized"]


def test_multipart_uploads_go_through_the_same_checks(api, auth_headers):
    """PNG bytes sent in parts and declared text/plain: rejected by the same sniffing."""
    data = samples.png(padding=6 * 1024 * 1024)
    created = multipart.create_multipart(
        api, auth_headers, data, content_type="text/plain", filename="notes.txt"
    )
    numbers = list(range(1, created["upload"]["part_count"] + 1))
    etags = multipart.send_parts(multipart.sign(api, auth_headers, created, numbers), created, data)
    assert multipart.complete(api, auth_headers, created, etags).is_success
    record = wait_for_status(api, auth_headers, created["id"], "rejected")
    assert (record["reject_reason"], record["detected_content_type"]) == (
        "content_mismatch",
        "image/png",
    )


def test_uppy_uploads_go_through_the_same_checks(api, auth_headers, settings, owner):
    """Uppy's form POST of HTML bytes named and typed as a PNG: rejected by the sniffing."""
    plugin = companion.Plugin.v6(
        api, auth.issue_token(settings.jwt_secret, owner, scope=auth.UPPY_SCOPE)
    )
    data = samples.HTML_WITH_SCRIPT
    params = plugin.params("cat.png", "image/png", companion.meta("cat.png", "image/png", data))
    assert params.status_code == 200, params.text
    assert companion.post_form(params.json(), data, "cat.png", "image/png").status_code == 204
    upload_id = companion.upload_id_of(params.json()["fields"]["key"])
    record = wait_for_status(api, auth_headers, upload_id, "rejected")
    assert (record["reject_reason"], record["detected_content_type"]) == (
        "content_mismatch",
        "text/html",
    )


def test_operators_release_and_delete_from_the_command_line(
    api, auth_headers, settings, clamd_address, broker_env, capsys
):
    released = scanned_upload(api, auth_headers, samples.EICAR)
    deleted = scanned_upload(api, auth_headers, b"x " + samples.EICAR)

    async def scan() -> None:
        async with scanners_on(settings, clamd_address) as found:
            await found.until_idle(found.scanner())

    run(scan())
    argv = ["uploads", "release", released["id"], "--reason", "checked by hand", "--by", "ada"]
    assert cli.main(argv) == 0
    assert "finalized" in capsys.readouterr().out
    assert cli.main(argv) == 1  # no longer quarantined
    assert "not quarantined" in capsys.readouterr().err
    assert cli.main(["uploads", "delete", deleted["id"], "--reason", "malware", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["upload"]["status"] == "deleted"
    admin = {"authorization": f"Bearer {admin_token(settings)}"}
    history = api.get(f"/v1/admin/uploads/{released['id']}", headers=admin).json()["history"]
    assert (history[-1]["actor"], history[-1]["detail"]) == (
        "admin:ada",
        {"reason": "checked by hand"},
    )


def test_the_live_stream_shows_scanning_then_the_verdict(
    api, auth_headers, settings, clamd_address, broker
):
    created = scanned_upload(api, auth_headers, b"y " + samples.EICAR)
    stream = Stream(broker + created["events_url"])
    assert stream.wait_for(1) == ["scanning"]  # where the upload is when the stream opens

    async def scan() -> None:
        async with scanners_on(settings, clamd_address) as found:
            await found.until_idle(found.scanner())

    run(scan())
    assert stream.wait_for(2) == ["scanning", "quarantined"]
    assert stream.closed.wait(10)  # a verdict ends the stream, as finalized does
