"""Rate limits: per owner on creates, part signings and downloads (per policy), and per
client address on failed authentications. No HTTP.

The counts live in PostgreSQL (queries.sql take_rate_limits), so every broker process shares
them. A limit that is not set costs nothing. A limit below 40 actions a second is counted
exactly, one take per action. Above that, a process that uses a key's allowance steadily
takes a lease of several actions at once (at most LEASE_SHARE of a second's allowance, and
LEASE_MAX), which it hands out itself for LEASE_SECONDS at most: what a lease did not use is
lost, so across processes the limit is never exceeded, and an owner may be refused while a
process still holds at most that share. An address over its failed-authentication limit is
also remembered in this process until its wait is over, so its next requests are refused
before their token is checked and without asking the database; so is an owner's refusal
(docs/operations.md#rate-limits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from broker import metrics
from broker.domain import errors
from broker.domain.rate_limits import Action, Rate, retry_after_seconds
from broker.flows.ports import Queries

log = logging.getLogger("broker.rate_limits")
T = TypeVar("T")

# Addresses remembered as blocked, and owners' leases and refusals, in one process; past this
# many, the ended ones are dropped (and, under a flood of distinct keys, all: the database
# still counts each).
MAX_ENTRIES = 10_000  # of either: blocked addresses, leases and refusals
LEASE_SHARE = 0.05  # of a key's allowance per second: the most a lease may take
LEASE_MAX = 64
LEASE_SECONDS = 1.0  # a lease's actions are used within this, or lost


@dataclass
class Lease:
    """Actions of one key taken from the database and not yet handed out; or, with size 0,
    a refusal that stands until `until`."""

    left: int
    until: float  # clock
    size: int  # how many it took


def lease_cap(rate: Rate) -> int:
    """The most actions of this rate one lease may take: 1 (exact) up to 40 a second."""
    return max(1, min(LEASE_MAX, int(rate.actions / rate.period_seconds * LEASE_SHARE)))


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
        self.leases: dict[str, Lease] = {}

    async def take(self, action: Action, rate: Rate | None, policy: str, owner: str) -> None:
        """Count one `action` of `owner` under `policy`; RateLimited (nothing counted) when it
        would exceed `rate`. No limit (None): nothing to do."""
        if rate is None:
            return
        key = f"{action}:{policy}:{owner}"
        lease = self.leases.get(key)
        now = self.clock()
        if lease is not None and now < lease.until:
            if lease.left > 0:
                lease.left -= 1
                return
            if lease.size == 0:  # refused: the database would say the same until then
                raise _refusal(action, rate, policy, lease.until - now)
        cap = lease_cap(rate)
        size = _next_lease_size(lease, cap, now)
        taken, wait = await self.queries.take_rate_limit(
            key,
            count=size,
            interval_seconds=rate.interval_seconds,
            period_seconds=rate.period_seconds,
        )
        if not taken:
            self._keep_lease(key, Lease(0, self.clock() + wait, 0))
            raise _refusal(action, rate, policy, wait)
        if cap > 1:
            self._keep_lease(key, Lease(taken - 1, self.clock() + LEASE_SECONDS, size))

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
        taken, wait = await self.queries.take_rate_limit(
            f"{Action.FAILED_AUTH}:{address}",
            interval_seconds=rate.interval_seconds,
            period_seconds=rate.period_seconds,
        )
        if taken:
            return None
        now = self.clock()
        _put_bounded(self.blocked, address, now + wait, lambda until: until, now)
        metrics.RATE_LIMITED.labels(Action.FAILED_AUTH).inc()
        log.warning("rate_limit.address_blocked", extra={"address": address, "seconds": wait})
        return self._address_refusal(wait)

    def _keep_lease(self, key: str, lease: Lease) -> None:
        _put_bounded(self.leases, key, lease, lambda kept: kept.until, self.clock())

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


def _put_bounded(
    entries: dict[str, T], key: str, value: T, ends: Callable[[T], float], now: float
) -> None:
    """Store `value`, first dropping the entries that have ended once there are MAX_ENTRIES
    (all of them, if none has)."""
    if len(entries) >= MAX_ENTRIES:
        for ended in [k for k, entry in entries.items() if ends(entry) <= now]:
            del entries[ended]
        if len(entries) >= MAX_ENTRIES:
            entries.clear()
    entries[key] = value


def _refusal(action: Action, rate: Rate, policy: str, wait: float) -> errors.RateLimited:
    metrics.RATE_LIMITED.labels(action).inc()
    return errors.RateLimited(
        retry_after_seconds(wait),
        f"more than {rate} {action} for this owner under policy {policy!r}",
        details={"action": action, "limit": str(rate), "policy": policy},
    )


def _next_lease_size(lease: Lease | None, cap: int, now: float) -> int:
    """How many actions the next lease of a key asks for: twice the last one's when it was
    used up in time, what it handed out when it ran out of time, 1 at first; up to `cap`."""
    if lease is None or lease.size == 0:
        return 1
    wanted = 2 * lease.size if now < lease.until else lease.size - lease.left
    return min(cap, max(1, wanted))
