"""`broker serve` in one process: uvicorn, with the shutdown orchestrators expect.

On SIGTERM (or SIGINT), in order, one log line per phase:
1. `shutdown.draining`: /readyz answers 503 at once, so a load balancer stops sending; live
   status streams get a final `retry:` and end, so EventSource reconnects to another
   process; requests are still served for BROKER_SHUTDOWN_DRAIN_SECONDS (1 s: the load
   balancer's next health check sees the 503), then uvicorn stops accepting connections;
2. requests in flight finish (MinIO's webhook calls included: an event is never
   half-handled), for at most the shutdown timeout minus 5 s, then they are cancelled;
3. the lifespan stops the background work (reconciler, webhook sender, scanner), which
   hands its leases back, and closes the pool (`shutdown.stopped`);
4. the process exits with status 0.

A second signal, or BROKER_SHUTDOWN_TIMEOUT_SECONDS (25 s: under Kubernetes' 30 s grace)
after the first, forces the exit (`shutdown.forced`, status 1). uvicorn itself would wait
for streams forever, and would end a clean stop by re-raising the signal (status 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("broker.serving")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Of the shutdown timeout, what the lifespan keeps for stopping background work and the
# pool after requests had their time.
LIFESPAN_SECONDS = 5.0


class DrainingServer(uvicorn.Server):
    """uvicorn.Server with the shutdown of this module's docstring."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, timeout_seconds: float, drain_seconds: float
    ) -> None:
        super().__init__(config)
        self.app = app
        self.timeout = timeout_seconds
        self.drain = drain_seconds
        self.draining_since: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self._stop) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        # Unlike uvicorn's, the signal is not raised again: a clean stop exits with 0.
        if self.draining_since is not None:
            log.info(
                "shutdown.stopped",
                extra={"seconds": round(time.monotonic() - self.draining_since, 3)},
            )

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.draining_since is not None:
            self._force(f"second signal ({signal.Signals(sig).name})")
        self.draining_since = time.monotonic()
        log.info(
            "shutdown.draining",
            extra={"signal": signal.Signals(sig).name, "timeout_seconds": self.timeout},
        )
        self.app.state.draining = True
        if self.loop is None:
            self.should_exit = True
        else:  # a signal handler must not touch asyncio objects itself
            self.loop.call_soon_threadsafe(self._drain)
        watchdog = threading.Timer(self.timeout, self._force, args=("timeout",))
        watchdog.daemon = True
        watchdog.start()

    def _drain(self) -> None:
        flows = getattr(self.app.state, "flows", None)
        if flows is not None:
            flows.live.close_streams()
        assert self.loop is not None
        self.loop.call_later(self.drain, self._stop_accepting)

    def _stop_accepting(self) -> None:
        log.info("shutdown.closing", extra={"connections": len(self.server_state.connections)})
        self.should_exit = True

    def _force(self, why: str) -> None:
        log.error("shutdown.forced", extra={"why": why})
        for hook in _FORCED_EXIT_HOOKS:
            try:
                hook()
            except Exception:
                log.exception("shutdown.hook_failed")
        logging.shutdown()
        os._exit(1)


_FORCED_EXIT_HOOKS: list[Callable[[], None]] = []


def on_forced_exit(hook: Callable[[], None]) -> None:
    """Run `hook` before a forced exit, which skips every `finally` on its way out: `broker
    dev` stops its PostgreSQL, MinIO and clamd so."""
    _FORCED_EXIT_HOOKS.append(hook)


def proxy_options(forwarded_allow_ips: str) -> dict[str, object]:
    """uvicorn's proxy header options for BROKER_FORWARDED_ALLOW_IPS: X-Forwarded-For (and
    -Proto) are believed only from these proxies; none when it is empty."""
    if not forwarded_allow_ips.strip():
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips.strip()}


def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    timeout_seconds: float,
    drain_seconds: float,
    forwarded_allow_ips: str = "",
) -> None:
    """Serve `app` on host:port until a signal stops it as described above."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        **proxy_options(forwarded_allow_ips),  # type: ignore[arg-type]
        timeout_graceful_shutdown=max(1, int(timeout_seconds - drain_seconds - LIFESPAN_SECONDS)),
    )
    DrainingServer(config, app, timeout_seconds, drain_seconds).run()
