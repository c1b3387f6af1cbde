"""The chaos run, short (bench/chaos.py has the long one): jobs submitted while pool processes, workers, the API
and redis-server are SIGKILLed in random order at random times; every accepted job finishes, once per step."""

from __future__ import annotations

import pytest

from bench.chaos import KINDS, ChaosConfig, run_chaos
from narrownet.cluster import RedisServer

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_every_accepted_job_finishes_through_random_kills(make_cluster, redis_server: RedisServer, api_key: str):
    config = ChaosConfig(duration=25.0, workers=2, kill_every=(1.0, 2.5), drain_timeout=120.0, seed=7)
    cluster = make_cluster(**config.settings())

    report = run_chaos(cluster, redis_server, api_key, config)

    print("\n" + report.summary())
    assert {kill.kind for kill in report.kills} == set(KINDS)
    assert len(report.accepted) > 10
    assert report.unfinished == []
    assert report.duplicated_metric_rows == 0
    assert report.metric_gaps == []
