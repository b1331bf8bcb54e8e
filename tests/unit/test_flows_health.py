"""Readiness probes: which dependency does not answer."""

from __future__ import annotations

import pytest

from broker.flows import health


@pytest.mark.parametrize(
    ("database", "storage", "failing"),
    [
        (True, True, []),
        (False, True, ["postgres"]),
        (True, False, ["minio"]),
        (False, False, ["postgres", "minio"]),
    ],
)
async def test_probes_name_each_dependency_that_does_not_answer(flows, database, storage, failing):
    flows.queries.available, flows.store.available = database, storage

    assert await health.Probes(flows.queries, flows.store).unavailable() == failing
