"""What a benchmark run measures (full and quick plans), the targets, and small statistics helpers."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
POST_LUA = BENCH_DIR / "post.lua"

# Targets are reported, never asserted.
TARGET_WORKER_RATIO = 0.9
TARGET_ACCEPT_RATIO = 0.9
TARGET_E2E_P99_MS_AT_50 = 25.0
# A ramp step fails when fewer than this share of the offered rate completes, or p99 exceeds the limit.
SATURATION_ACHIEVED_SHARE = 0.95
SATURATION_P99_LIMIT_MS = 500.0


@dataclass(frozen=True)
class Plan:
    mode: str
    worker_tasks: int
    worker_reps: int
    concurrency: int
    web_concurrency: int
    web_threads: int
    accept_levels: tuple[int, ...]
    accept_seconds: int
    accept_warmup_seconds: int
    accept_reps: int
    e2e_rates: tuple[int, ...]
    e2e_seconds: float
    saturation_rates: tuple[int, ...]
    saturation_seconds: float
    settle_timeout: float
    redis_requests: int


FULL = Plan(
    mode="full",
    worker_tasks=2000,
    worker_reps=3,
    concurrency=2,
    web_concurrency=2,
    web_threads=4,
    accept_levels=(1, 8, 32),
    accept_seconds=10,
    accept_warmup_seconds=2,
    accept_reps=2,
    e2e_rates=(50, 200),
    e2e_seconds=20.0,
    saturation_rates=(20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 400),
    saturation_seconds=12.0,
    settle_timeout=240.0,
    redis_requests=200_000,
)

# The same measures, briefly: proves the benchmark still works (CI), says nothing about speed.
QUICK = replace(
    FULL,
    mode="quick",
    worker_tasks=200,
    worker_reps=1,
    accept_seconds=1,
    accept_warmup_seconds=1,
    accept_reps=1,
    e2e_seconds=1.5,
    saturation_rates=(20,),
    saturation_seconds=1.5,
    settle_timeout=40.0,
    redis_requests=20_000,
)

_START = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of `values` (any order); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def ratio(project: float | None, baseline: float | None) -> float | None:
    if project is None or not baseline:
        return None
    return round(project / baseline, 3)


# --- processes -------------------------------------------------------------------------------------
