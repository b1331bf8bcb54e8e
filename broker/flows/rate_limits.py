"""Rate limits: per owner on creates, part signings and downloads (per policy), and per
client address on failed authentications. No HTTP.

The counts live in PostgreSQL (queries.sql take_rate_limit), so every broker process shares
them: one statement, one round trip, per limited request. A limit that is not set costs
nothing. An address over its failed-authentication limit is also remembered in this process
until its wait is over, so its next requests are refused before their token is checked and
without asking the database (docs/operations.md#rate-limits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from broker import metrics
from broker.domain import errors
from broker.domain.rate_limits import Action, Rate, retry_after_seconds
from broker.flows.ports import Queries

log = logging.getLogger("broker.rate_limits")

# Addresses remembered as blocked in one process; past this, the expired ones are dropped
# (and, under a flood of distinct addresses, all: the database still counts each).
MAX_BLOCKED_ADDRESSES = 10_000


class RateLimiter:
    """Counts limited actions in the database and refuses those over the limit."""

    def __init__(
        self,
        queries: Queries,
        failed_auth: Rate | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queries = queries
        self.failed_auth = failed_auth
        self.clock = clock
        self.blocked: dict[str, float] = {}  # client address -> when its wait ends (clock)

    async def take(self, action: Action, rate: Rate | None, policy: str, owner: str) -> None:
        """Count one `action` of `owner` under `policy`; RateLimited (nothing counted) when it
        would exceed `rate`. No limit (None): nothing to do."""
        if rate is None:
            return
        wait = await self.queries.take_rate_limit(
            f"{action}:{policy}:{owner}",
            interval_seconds=rate.interval_seconds,
            period_seconds=rate.period_seconds,
        )
        if wait > 0:
            metrics.RATE_LIMITED.labels(action).inc()
            raise errors.RateLimited(
                retry_after_seconds(wait),
                f"more than {rate} {action} for this owner under policy {policy!r}",
                details={"action": action, "limit": str(rate), "policy": policy},
            )

    def address_blocked(self, address: str | None) -> errors.RateLimited | None:
        """The refusal for a client address still over its failed-authentication limit (as
        this process last learnt it), or None. No I/O: checked before anything else."""
        if address is None or not self.blocked:
            return None
        until = self.blocked.get(address)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self.blocked[address]
            return None
        metrics.RATE_LIMITED.labels(Action.FAILED_AUTH).inc()
        return self._address_refusal(left)

    async def failed_authentication(self, address: str | None) -> errors.RateLimited | None:
        """Count a request refused 401 from `address`; the refusal to answer instead when the
        address is now over BROKER_RATE_LIMIT_FAILED_AUTH, else None."""
        rate = self.failed_auth
        if rate is None or address is None:
            return None
        wait = await self.queries.take_rate_limit(
            f"{Action.FAILED_AUTH}:{address}",
            interval_seconds=rate.interval_seconds,
            period_seconds=rate.period_seconds,
        )
        if wait <= 0:
            return None
        if len(self.blocked) >= MAX_BLOCKED_ADDRESSES:
            now = self.clock()
            self.blocked = {a: t for a, t in self.blocked.items() if t > now}
            if len(self.blocked) >= MAX_BLOCKED_ADDRESSES:
                self.blocked.clear()
        self.blocked[address] = self.clock() + wait
        metrics.RATE_LIMITED.labels(Action.FAILED_AUTH).inc()
        log.warning("rate_limit.address_blocked", extra={"address": address, "seconds": wait})
        return self._address_refusal(wait)

    def _address_refusal(self, wait: float) -> errors.RateLimited:
        assert self.failed_auth is not None
        return errors.RateLimited(
            retry_after_seconds(wait),
            "too many failed authentications from this address",
            details={"action": Action.FAILED_AUTH, "limit": str(self.failed_auth)},
        )

    async def forget_idle(self, batch: int = 1000, max_batches: int = 100) -> int:
        """Delete the database's rows of keys whose allowance is whole again, in batches;
        how many went. The reconciler runs it on each pass."""
        total = 0
        for _ in range(max_batches):
            deleted = await self.queries.delete_idle_rate_limits(batch)
            total += deleted
            if deleted < batch:
                break
        return total
