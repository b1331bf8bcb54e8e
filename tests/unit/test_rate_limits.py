"""Rate limits: the "60/minute" rules, where they come from, and the use cases refusing what
is over them (429 with a Retry-After) on the in-memory fakes."""

from __future__ import annotations

import pytest

from broker.config import ConfigError
from broker.domain import errors, policies
from broker.domain.rate_limits import Action, Rate, RateLimits, parse_rate, retry_after_seconds
from broker.flows.rate_limits import RateLimiter
from tests.unit.fakes import MemoryQueries
from tests.unit.steps import ORIGIN, OWNER, a_file, create, finalized
from tests.unit.wired import MIB, POLICIES

LIMITED = (
    POLICIES
    + """
[policies.limited]
rate_limits = { create = "3/minute", parts = "2/minute", downloads = "2/hour" }
"""
)


@pytest.mark.parametrize(
    ("text", "actions", "period"),
    [
        ("60/minute", 60, 60),
        ("1/second", 1, 1),
        (" 10 / hour ", 10, 3600),
        ("5000/day", 5000, 86400),
    ],
)
def test_a_rule_is_a_count_per_unit_of_time(text, actions, period):
    rate = parse_rate(text)
    assert (rate.actions, rate.period_seconds) == (actions, period)
    assert rate.interval_seconds == period / actions
    assert str(rate) == text.replace(" ", "")


@pytest.mark.parametrize(
    "text", ["60", "0/minute", "-1/minute", "60/minutes", "60/fortnight", "1.5/second", "", 60]
)
def test_anything_else_is_refused_saying_what_a_rule_looks_like(text):
    with pytest.raises(ValueError, match="like '60/minute'"):
        parse_rate(text)


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    assert [retry_after_seconds(w) for w in (0.001, 0.5, 1.0, 1.2, 59.01)] == [1, 1, 1, 2, 60]


def test_a_policy_sets_its_limits_and_the_environment_fills_the_others(make_flows):
    flows = make_flows(LIMITED, rate_limit_create="100/second", rate_limit_failed_auth="20/minute")
    by_name = flows.policies.by_name
    assert by_name["limited"].rate_limits == RateLimits(
        create=Rate(3, 60, "3/minute"),
        parts=Rate(2, 60, "2/minute"),
        downloads=Rate(2, 3600, "2/hour"),
    )
    assert by_name["default"].rate_limits == RateLimits(create=Rate(100, 1, "100/second"))
    assert by_name["avatars"].rate_limits.create == Rate(100, 1, "100/second")
    assert flows.policies.failed_auth_limit == Rate(20, 60, "20/minute")


def test_without_any_setting_nothing_is_limited(flows):
    assert all(p.rate_limits == RateLimits() for p in flows.policies.by_name.values())
    assert flows.policies.failed_auth_limit is None


def test_a_bad_rule_in_the_policies_file_names_the_policy_and_the_field(make_flows):
    with pytest.raises(ConfigError, match=r"policy 'limited': rate_limits.create: .*60/minute"):
        make_flows(POLICIES + '[policies.limited]\nrate_limits = { create = "lots" }\n')
    with pytest.raises(ConfigError, match=r"rate_limits.uploads: Extra inputs"):
        make_flows(POLICIES + '[policies.limited]\nrate_limits = { uploads = "1/second" }\n')


def test_a_bad_rule_in_the_environment_names_the_variable(make_flows):
    with pytest.raises(ConfigError, match="BROKER_RATE_LIMIT_DOWNLOADS: 'often' is not a rate"):
        make_flows(rate_limit_downloads="often")
    with pytest.raises(ConfigError, match="BROKER_RATE_LIMIT_FAILED_AUTH"):
        policies.load_policies(
            make_flows().settings.model_copy(update={"rate_limit_failed_auth": "9"})
        )


async def test_creates_over_the_limit_are_refused_with_the_wait_and_nothing_is_recorded(
    make_flows,
):
    flows = make_flows(LIMITED)
    for _ in range(3):  # the whole allowance at once
        await create(flows, policy="limited")

    with pytest.raises(errors.RateLimited) as raised:
        await create(flows, policy="limited")

    refused = raised.value
    assert (refused.status, refused.code) == (429, "ERR_RATE_LIMITED")
    assert refused.retry_after == 20  # one create every 20 s from now on
    assert refused.headers() == {"Retry-After": "20"}
    assert refused.details == {
        "retry_after": 20, "action": "create", "limit": "3/minute", "policy": "limited",
    }  # fmt: skip
    assert len(flows.queries.uploads) == 3


async def test_another_owner_and_another_policy_keep_their_own_allowance(make_flows):
    flows = make_flows(LIMITED)
    for _ in range(3):
        await create(flows, policy="limited")
    with pytest.raises(errors.RateLimited):
        await create(flows, policy="limited")

    await create(flows, owner="bob", policy="limited")
    await create(flows)  # the default policy has no limit


async def test_after_the_wait_the_owner_may_create_again_at_the_steady_rate(make_flows):
    flows = make_flows(LIMITED)
    for _ in range(3):
        await create(flows, policy="limited")
    with pytest.raises(errors.RateLimited) as raised:
        await create(flows, policy="limited")

    flows.clock.advance(raised.value.retry_after - 1)
    with pytest.raises(errors.RateLimited) as again:
        await create(flows, policy="limited")
    assert again.value.retry_after == 1
    flows.clock.advance(1)
    await create(flows, policy="limited")
    with pytest.raises(errors.RateLimited):
        await create(flows, policy="limited")


async def test_uppy_creates_count_against_the_same_limit(make_flows):
    flows = make_flows(LIMITED)
    await create(flows, policy="limited")
    await flows.companion.create_form(OWNER, a_file(policy="limited"))
    await flows.companion.create_multipart(OWNER, a_file(size=6 * MIB, policy="limited"))

    with pytest.raises(errors.RateLimited):
        await flows.companion.create_form(OWNER, a_file(policy="limited"))


async def test_part_signing_requests_are_limited_a_batch_counting_once(make_flows):
    flows = make_flows(LIMITED)
    created = await flows.uploads.create(
        OWNER, a_file(size=6 * MIB, multipart=True, policy="limited")
    )
    upload_id = created.record.id
    await flows.multipart.sign_parts(OWNER, upload_id, [1, 2], {})
    await flows.multipart.sign_parts(OWNER, upload_id, [1], {})

    with pytest.raises(errors.RateLimited) as raised:
        await flows.multipart.sign_parts(OWNER, upload_id, [2], {})
    assert raised.value.details["action"] == "parts"
    assert raised.value.retry_after == 30


async def test_downloads_are_limited_per_owner_and_a_refused_one_is_not_audited(make_flows):
    flows = make_flows(LIMITED)
    upload = await finalized(flows, policy="limited")
    await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)
    await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)

    with pytest.raises(errors.RateLimited) as raised:
        await flows.uploads.download(OWNER, upload.id, origin=ORIGIN)
    assert raised.value.details["action"] == "downloads"
    assert raised.value.retry_after == 1800
    assert len(flows.queries.downloads) == 2  # the audit holds the URLs issued, only those


async def test_the_reconciler_forgets_keys_whose_allowance_is_whole_again(make_flows):
    flows = make_flows(LIMITED)
    await create(flows, policy="limited")
    await create(flows, owner="bob", policy="limited")
    await flows.reconciler.run_pass(sweep=False)
    assert len(flows.queries.rate_limits) == 2  # both still within their minute

    flows.clock.advance(21)
    await flows.reconciler.run_pass(sweep=False)
    assert flows.queries.rate_limits == {}


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_address_over_its_failed_authentications_is_blocked_until_its_wait_ends():
    queries, ticks = MemoryQueries(), Ticks()
    limiter = RateLimiter(queries, parse_rate("2/minute"), clock=ticks)
    assert await limiter.failed_authentication("10.0.0.1") is None
    assert await limiter.failed_authentication("10.0.0.1") is None
    assert limiter.address_blocked("10.0.0.1") is None  # at the limit, not over it

    refusal = await limiter.failed_authentication("10.0.0.1")

    assert refusal is not None and refusal.retry_after == 30
    assert refusal.details == {"retry_after": 30, "action": Action.FAILED_AUTH, "limit": "2/minute"}
    blocked = limiter.address_blocked("10.0.0.1")
    assert blocked is not None and blocked.status == 429
    assert limiter.address_blocked("10.0.0.2") is None
    ticks.now += 30
    assert limiter.address_blocked("10.0.0.1") is None


async def test_without_a_failed_authentication_limit_nothing_is_counted():
    queries = MemoryQueries()
    limiter = RateLimiter(queries, None)
    for _ in range(100):
        assert await limiter.failed_authentication("10.0.0.1") is None
    assert queries.rate_limits == {}


async def test_a_low_limit_is_counted_exactly_one_take_per_action():
    queries = MemoryQueries()
    limiter = RateLimiter(queries, None, clock=Ticks())
    rate = parse_rate("30/second")  # below 40 a second: no lease
    for _ in range(30):
        await limiter.take(Action.CREATE, rate, "p", OWNER)
    with pytest.raises(errors.RateLimited):
        await limiter.take(Action.CREATE, rate, "p", OWNER)
    assert queries.rate_limit_statements == 31


async def test_a_high_limit_used_steadily_is_leased_and_never_exceeded_across_processes():
    """Two processes share one database; the clock stands still, so exactly the burst of
    1,000 is allowed, whoever holds leases, and it takes far fewer statements."""
    queries, ticks = MemoryQueries(), Ticks()
    processes = [RateLimiter(queries, None, clock=ticks) for _ in range(2)]
    rate = parse_rate("1000/second")
    allowed = refused = 0
    for number in range(1500):
        try:
            await processes[number % 2].take(Action.CREATE, rate, "p", OWNER)
            allowed += 1
        except errors.RateLimited:
            refused += 1
    assert allowed <= 1000
    assert allowed >= 1000 - 2 * 50  # at most a lease per process held back
    assert queries.rate_limit_statements < 200


async def test_a_lease_not_used_in_time_is_lost_and_the_next_one_asks_for_what_was_used():
    queries, ticks = MemoryQueries(), Ticks()
    limiter = RateLimiter(queries, None, clock=ticks)
    rate = parse_rate("1000/second")  # leases of up to 50
    for _ in range(1 + 2 + 4):  # leases of 1, 2 and 4 actions, each used up
        await limiter.take(Action.CREATE, rate, "p", OWNER)
    assert limiter.leases[f"create:p:{OWNER}"].size == 4
    await limiter.take(Action.CREATE, rate, "p", OWNER)  # a lease of 8: 7 left
    ticks.now += 2  # the 7 are lost
    await limiter.take(Action.CREATE, rate, "p", OWNER)
    assert limiter.leases[f"create:p:{OWNER}"].size == 1  # it handed out 1
