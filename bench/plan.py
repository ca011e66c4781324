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
# Against the bare chain (bench/bare_chain.py), measured in the same run (issue 14).
FIXED_RATE = 50  # orders/s of the fixed-rate run: p50/p99, CPU, memory and Redis commands per order
TARGET_SATURATION_RATIO = 0.9  # project saturation rate >= 0.9x the bare chain's
TARGET_P99_RATIO_AT_FIXED = 1.5  # project p99 at FIXED_RATE <= 1.5x the bare chain's
TARGET_CPU_RATIO = 1.25  # project CPU seconds per order <= 1.25x the bare chain's
TARGET_EVENTS_COST = 0.10  # task events on cost <= 10 % more CPU per order than off
# A ramp step fails when fewer than this share of the offered rate completes, or p99 exceeds the limit.
SATURATION_ACHIEVED_SHARE = 0.95
SATURATION_P99_LIMIT_MS = 500.0
# The per-order resource figures of each stack at FIXED_RATE (end_to_end computes, report checks them).
RESOURCE_FIGURES = (
    "cpu_s_per_1000",
    "cpu_s_per_1000_by_service",
    "redis_commands_per_1000",
    "redis_commands_per_1000_by_command",
    "redis_keys_per_order",
    "redis_bytes_per_order",
    "redis_key_bytes_per_order",
)


@dataclass(frozen=True)
class Plan:
    mode: str
    worker_tasks: int
    worker_reps: int
    concurrency: int
    web_concurrency: int
    web_connections: int
    accept_levels: tuple[int, ...]
    accept_seconds: int
    accept_warmup_seconds: int
    accept_reps: int
    e2e_rates: tuple[int, ...]
    e2e_seconds: float
    e2e_fixed_reps: int
    saturation_rates: tuple[int, ...]
    saturation_refine: int
    saturation_seconds: float
    option_seconds: float
    option_reps: int
    option_warmup: bool
    settle_timeout: float
    redis_requests: int


FULL = Plan(
    mode="full",
    worker_tasks=2000,
    worker_reps=3,
    concurrency=2,
    web_concurrency=2,
    web_connections=1000,
    accept_levels=(1, 8, 32),
    accept_seconds=10,
    accept_warmup_seconds=2,
    accept_reps=2,
    e2e_rates=(50, 200),
    e2e_seconds=20.0,
    e2e_fixed_reps=2,
    saturation_rates=(20, 40, 60, 80, 100, 130, 160, 200, 250, 300, 400, 500),
    saturation_refine=2,
    saturation_seconds=10.0,
    option_seconds=20.0,
    option_reps=2,
    option_warmup=True,
    settle_timeout=240.0,
    redis_requests=200_000,
)

# The same measures, briefly: proves the benchmark still works (CI), says nothing about speed.
QUICK = replace(
    FULL,
    mode="quick",
    worker_tasks=100,
    worker_reps=1,
    accept_seconds=1,
    accept_warmup_seconds=1,
    accept_reps=1,
    e2e_seconds=1.0,
    e2e_fixed_reps=1,
    saturation_rates=(20,),
    saturation_refine=0,
    saturation_seconds=1.5,
    option_seconds=0.5,
    option_reps=1,
    option_warmup=False,  # the quick mode checks that the phase works, not what it measures
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
