"""What a chaos run is told (ChaosConfig) and what it found (ChaosReport): kills, recovery times, final checks."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from core.db.models import JobStatus

KINDS = ("worker-child", "worker", "api", "redis")
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


@dataclass
class ChaosConfig:
    duration: float = 120.0  # seconds of submitting and killing; the drain comes after
    workers: int = 2
    concurrency: int = 1
    lease: float = 4.0
    interval: float = 0.5
    max_attempts: int = 5
    submit_every: float = 0.5
    kill_every: tuple[float, float] = (2.0, 6.0)
    outage: tuple[float, float] = (0.5, 2.0)
    drain_timeout: float = 300.0
    seed: int = 1

    def settings(self) -> dict[str, str]:
        return {"NARROWNET_LEASE_SECONDS": str(self.lease), "NARROWNET_RECONCILE_INTERVAL_SECONDS": str(self.interval),
                "NARROWNET_MAX_ATTEMPTS": str(self.max_attempts), "NARROWNET_METRICS_FLUSH_EVERY": "5",
                "NARROWNET_WORKER_TORCH_THREADS": "1", "NARROWNET_MAX_QUEUED_JOBS_PER_USER": "100000"}


@dataclass
class Kill:
    at: float  # seconds since the start
    kind: str
    affected: dict[str, int]  # job id -> its attempt when the kill happened
    released_after: dict[str, float] = field(default_factory=dict)  # running -> queued again (or finished)
    recovered_after: dict[str, float] = field(default_factory=dict)  # claimed by a new attempt (or finished)


@dataclass
class ChaosReport:
    config: ChaosConfig
    submitted: int = 0
    accepted: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    api_downtimes: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    duplicated_metric_rows: int = 0
    metric_gaps: list[str] = field(default_factory=list)  # succeeded jobs missing a point of their cadence
    failures: dict[str, str] = field(default_factory=dict)
    drain_seconds: float = 0.0

    def recovery_times(self, kind: str | None = None, *, released: bool = False) -> list[float]:
        return [t for k in self.kills if kind in (None, k.kind)
                for t in (k.released_after if released else k.recovered_after).values()]

    def unrecovered(self) -> int:
        return sum(len(k.affected) - len(k.recovered_after) for k in self.kills)

    def ok(self) -> bool:
        return not self.unfinished and not self.duplicated_metric_rows and not self.metric_gaps

    def summary(self) -> str:
        by_kind = {kind: sum(k.kind == kind for k in self.kills) for kind in KINDS}
        lines = [f"jobs: {self.submitted} submitted, {len(self.accepted)} accepted; final statuses {self.statuses}",
                 f"kills: {len(self.kills)} ({', '.join(f'{k} {n}' for k, n in by_kind.items())})",
                 f"unfinished accepted jobs: {len(self.unfinished)}; duplicated metric rows: "
                 f"{self.duplicated_metric_rows}; succeeded jobs with a metric gap: {len(self.metric_gaps)}"]
        for kind in (None, "worker-child", "worker", "redis"):
            times = self.recovery_times(kind)
            if times:
                lines.append(f"recovery {kind or 'all kills'} (kill -> claimed again): {len(times)} jobs, median "
                             f"{statistics.median(times):.2f}s, max {max(times):.2f}s")
        released = self.recovery_times("worker-child", released=True) + self.recovery_times("worker", released=True)
        if released:
            lines.append(f"worker kills, kill -> back in the queue (bounded by R): median "
                         f"{statistics.median(released):.2f}s, max {max(released):.2f}s")
        if self.api_downtimes:
            lines.append(f"API back after a kill: median {statistics.median(self.api_downtimes):.2f}s, "
                         f"max {max(self.api_downtimes):.2f}s")
        lines.append(f"R = lease + interval = {self.config.lease + self.config.interval:g}s; jobs hit but not seen "
                     f"claimed again before finishing: {self.unrecovered()}; drain after chaos: "
                     f"{self.drain_seconds:.1f}s")
        lines += [f"failed {job}: {error}" for job, error in self.failures.items()]
        return "\n".join(lines)
