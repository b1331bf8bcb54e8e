"""The app server a webhook bench delivers to: answers every POST 204 at once and remembers
when each webhook-id first arrived. Its own process (uvicorn, httptools), so that receiving
does not share a GIL with the bench or the broker.

    python -m bench.webhook_receiver --port 8002    GET /received -> {webhook-id: unix seconds}
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn

Scope = dict[str, Any]

received: dict[str, float] = {}


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["method"] == "POST":
        headers = dict(scope["headers"])
        webhook_id = headers.get(b"webhook-id", b"").decode()
        received.setdefault(webhook_id, time.time())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps(received).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_config=None)


if __name__ == "__main__":
    main()
