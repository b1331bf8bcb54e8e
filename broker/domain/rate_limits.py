"""Rate limits: rules such as "60/minute", and what is limited. Pure: no I/O.

A rule allows `count` actions per `period`, as a burst of up to `count` at once and then one
every `period / count` seconds (GCRA, the generic cell rate algorithm: the database keeps,
per limited key, the moment its allowance is whole again; queries.sql take_rate_limit).
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
RULE = re.compile(r"^\s*([1-9][0-9]{0,8})\s*/\s*(second|minute|hour|day)\s*$")


class Action(StrEnum):
    """What a limit counts; the first part of its key."""

    CREATE = "create"  # uploads created (native API and Uppy's routes)
    PARTS = "parts"  # requests signing multipart parts (a batch counts once)
    DOWNLOADS = "downloads"  # presigned GETs issued
    FAILED_AUTH = "failed_auth"  # requests refused 401, per client address


class Rate(NamedTuple):
    """`actions` per `period_seconds`."""

    actions: int
    period_seconds: int
    text: str

    @property
    def interval_seconds(self) -> float:
        """The time one action uses up of the allowance."""
        return self.period_seconds / self.actions

    def __str__(self) -> str:
        return self.text


def parse_rate(value: object) -> Rate:
    """`<count>/<second|minute|hour|day>` (count 1..999,999,999) as a Rate, or ValueError."""
    if isinstance(value, Rate):
        return value
    match = RULE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a rate like '60/minute' (second, minute, hour, day)")
    count, unit = int(match.group(1)), match.group(2)
    return Rate(count, PERIODS[unit], f"{count}/{unit}")


def retry_after_seconds(wait: float) -> int:
    """Retry-After's whole seconds for a wait: rounded up, at least 1."""
    return max(1, math.ceil(wait))


RateRule = Annotated[Rate, PlainValidator(parse_rate), PlainSerializer(str)]


class RateLimits(BaseModel):
    """A policy's per-owner limits (the `rate_limits` table of a policy); None: no limit,
    unless BROKER_RATE_LIMIT_<ACTION> sets one for every policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    create: RateRule | None = None
    parts: RateRule | None = None
    downloads: RateRule | None = None

    def over(self, defaults: RateLimits) -> RateLimits:
        """These limits, with `defaults` where none is set."""
        return RateLimits(
            create=self.create or defaults.create,
            parts=self.parts or defaults.parts,
            downloads=self.downloads or defaults.downloads,
        )
