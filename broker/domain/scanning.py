"""What a malware scanning engine answers: a verdict, or that it could not give one."""

from __future__ import annotations

from typing import NamedTuple

# The signature reported for a stream longer than clamd accepts (StreamMaxLength). Named like
# clamd's own "Heuristics.Limits.Exceeded.MaxFileSize" (AlertExceedsMax): the file was not
# scanned in full, so it is held as if infected; retrying would give the same answer forever.
STREAM_TOO_LONG_SIGNATURE = "Heuristics.Limits.Exceeded.StreamMaxLength"


class ScanVerdict(NamedTuple):
    """An engine's answer about one object: clean, or infected with a named signature."""

    infected: bool
    signature: str | None
    engine: str


class ScannerUnavailable(Exception):
    """The scanning engine could not be reached or gave no verdict; scanning again later may
    succeed. Messages name the engine and the failure, never a credential or file content."""
