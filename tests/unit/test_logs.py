"""Structured logs: one JSON object per line, with the request id while serving a request."""

from __future__ import annotations

import json
import logging

from broker import logs, request_context


def test_log_lines_are_json_with_extras_and_the_request_id(capsys):
    logs.configure("INFO")
    token = request_context.REQUEST_ID.set("req-42")
    try:
        logging.getLogger("broker.test").info("upload.created", extra={"upload_id": "u-1"})
    finally:
        request_context.REQUEST_ID.reset(token)
    logging.getLogger("broker.test").info("outside")
    first, second = capsys.readouterr().err.strip().splitlines()
    entry = json.loads(first)
    assert entry["event"] == "upload.created"
    assert (entry["upload_id"], entry["request_id"], entry["level"]) == ("u-1", "req-42", "info")
    assert entry["ts"].endswith("+00:00")
    assert "request_id" not in json.loads(second)
