"""Promise 9, the per-key limit shared by API replicas: with Redis, two apps count in one window; while Redis is
unreachable each falls back to limiting in-process (never unlimited, never a 5xx)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from api.ratelimit import RateLimiter, RedisRateLimiter
from tests.security.conftest import ApiFactory
from tests.service_guard import REDIS_HOST, REDIS_PORT, redis_database

pytestmark = pytest.mark.anyio

ONLY_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_database() as db:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


@ONLY_SQLITE
@pytest.mark.service
async def test_two_replicas_share_one_limit(api_factory: ApiFactory, redis_url: str) -> None:
    limits = {"rate_limit_per_minute": 5, "rate_limit_backend": "redis", "rate_limit_redis_url": redis_url}
    async with api_factory(**limits) as first, api_factory(**limits) as second:
        assert isinstance(first.runtime.limiter, RedisRateLimiter)
        alice, bob = first.new_user("alice"), first.new_user("bob")
        codes = [(await replica.client.get("/v1/jobs", headers=alice)).status_code
                 for replica in (first, second, first, second, first, second)]
        assert codes == [200] * 5 + [429]
        limited = await first.client.get("/v1/jobs", headers=alice)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert (await second.client.get("/v1/jobs", headers=bob)).status_code == 200  # per key
        counters = redis.Redis.from_url(redis_url).keys(RedisRateLimiter.PREFIX + "*")
        assert len(counters) == 2
        assert all(0 < redis.Redis.from_url(redis_url).ttl(k) <= 61 for k in counters)  # windows expire


@ONLY_SQLITE
async def test_in_process_limit_is_per_replica(api_factory: ApiFactory) -> None:
    """What the Redis limiter fixes: in memory, each replica grants the whole limit."""
    limits = {"rate_limit_per_minute": 2, "rate_limit_backend": "memory"}
    async with api_factory(**limits) as first, api_factory(**limits) as second:
        assert isinstance(first.runtime.limiter, RateLimiter)
        alice = first.new_user()
        codes = [(await replica.client.get("/v1/jobs", headers=alice)).status_code
                 for replica in (first, first, second, second, first)]
        assert codes == [200, 200, 200, 200, 429]


@ONLY_SQLITE
async def test_redis_down_falls_back_to_limiting_in_process(api_factory: ApiFactory) -> None:
    async with api_factory(rate_limit_per_minute=3, rate_limit_backend="redis",
                           rate_limit_redis_url="redis://127.0.0.1:1/0") as api:
        alice = api.new_user()
        codes = [(await api.client.get("/v1/jobs", headers=alice)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


def test_redis_backend_needs_a_redis_url() -> None:
    from api.ratelimit import make_limiter
    from core.settings import Settings

    with pytest.raises(ValueError, match="rate_limit_backend=redis"):
        make_limiter(Settings(rate_limit_backend="redis", broker_url="sqla+sqlite:///x.db"))
    assert isinstance(make_limiter(Settings(broker_url="redis://127.0.0.1:6379/0")), RedisRateLimiter)
    assert isinstance(make_limiter(Settings(broker_url="sqla+sqlite:///x.db")), RateLimiter)
