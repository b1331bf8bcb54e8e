"""Readiness: do the database and storage answer right now?"""

from __future__ import annotations

from broker.domain import errors
from broker.flows.ports import ObjectStore, Queries


class Probes:
    """What a load balancer asks before sending traffic."""

    def __init__(self, queries: Queries, store: ObjectStore) -> None:
        self.queries = queries
        self.storage = store

    async def unavailable(self) -> list[str]:
        """The dependencies that do not answer: "postgres", "minio", or none."""
        failing = []
        try:
            await self.queries.ping()
        except errors.DatabaseUnavailable:
            failing.append("postgres")
        try:
            await self.storage.ping()
        except errors.StorageUnavailable:
            failing.append("minio")
        return failing
