"""The embedded default under load: `narrownet serve` (SQLite database, SQLite broker) and 50 concurrent clients,
each with its own key, submitting 4 jobs each and polling them. Every submit is answered 201 (or a deliberate
429), none 5xx, none left without an answer; every accepted job succeeds; and no job exists that its client was
not told about. The latencies are measured by bench/bench_embedded_load.py, which drives the same load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_embedded_load import create_keys, run_load, stored_jobs
from narrownet.cluster import Serve

pytestmark = pytest.mark.slow

CLIENTS, SUBMITS = 50, 4


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    served = Serve(tmp_path / "home", {"NARROWNET_LOG_LEVEL": "INFO"})
    yield served
    served.stop()


def test_fifty_clients_are_all_answered_and_every_accepted_job_succeeds(serve: Serve):
    serve.start()
    keys = create_keys(serve.database_url, CLIENTS)

    report = asyncio.run(run_load(serve.url, keys, submits=SUBMITS, poll_interval=0.5, timeout=600))

    assert len(report.submits) == CLIENTS * SUBMITS
    unanswered = [s for s in report.submits if s.status is None]
    assert not unanswered, f"{len(unanswered)} submits got no answer: {unanswered[:3]}"
    refused = [s for s in report.submits if s.status != 201]
    # A 429 would be the per-user limits working (4 submits are far below them); anything else is a failure.
    assert all(s.status == 429 and s.retry_after for s in refused), report.answers()
    assert not any(status is None or status >= 500 for status in report.poll_statuses), report.poll_statuses

    accepted = {s.job_id for s in report.accepted}
    stored = stored_jobs(serve.database_url)
    assert set(stored) == accepted  # no job its client was not told about, none of the told ones missing
    assert {stored[j] for j in accepted} == {"succeeded"}, {j: stored[j] for j in accepted if stored[j] != "succeeded"}
