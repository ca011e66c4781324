"""The benchmark: real redis-server, real worker processes, real gunicorn; ratios against baselines.

Run from the repository root after `./dev setup`:

    .venv/py3.11/bin/python -m bench            # full mode, ~15 minutes; also writes bench/results.json
    .venv/py3.11/bin/python -m bench --quick    # CI smoke run, about 1.5 min; checks only that every key is there

Phases (each prints progress lines on stderr):
1. worker path: N `orders.process` messages (and their orders) preloaded, then the project's `worker`
   console script is started and timed until the queue and the unacked set are empty; the same for a
   bare Celery app (bench/bare_celery.py) draining identical messages with a no-op task.
2. accept path: `wrk` POSTs orders at 1, 8 and 32 connections to the `order-service` console script
   and to a bare Flask app doing one send_task (bench/bare_flask.py) under the same gunicorn config.
3. end to end: worker + notification-service + order-service against the same three hops in bare
   Celery (bench/bare_chain.py, bench/bare_flask.py), side by side on two redis-servers, loaded in
   turn: fixed open-loop rates, then a ramp of rates to find where each saturates; latency = from
   each POST's due time to the finish time its last hop wrote; CPU seconds of every process, Redis
   commands, keys and bytes, and memory, per 1,000 orders.
4. option costs: CPU per order of the project with task events off and with Celery's own logging.
5. Redis ceiling: `redis-benchmark` LPUSH/RPOP against the same redis-server.

Outputs: bench/out/results.json, bench/out/results.md, bench/out/bench.png (and, in full mode, the
committed copies bench/results.json, bench/results.md, bench/results.png).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.accept_path import AcceptPath
from bench.end_to_end import EndToEnd
from bench.harness import Harness
from bench.options import Options
from bench.plan import _START, FIXED_RATE, FULL, OUT_DIR, QUICK, Plan, progress
from bench.redis_ceiling import RedisCeiling
from bench.report import machine, missing_keys, summary_rows, versions, write_outputs
from bench.worker_path import WorkerPath


class Bench(Harness, WorkerPath, AcceptPath, EndToEnd, Options, RedisCeiling):
    """One benchmark run: the harness and its five phases."""


PHASES = ("worker", "accept", "e2e", "options", "redis")


def run(plan: Plan, out_dir: Path, phases: set[str], profile: bool = False) -> dict[str, Any]:
    bench = Bench(plan, out_dir, profile)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": plan.mode,
        "machine": machine(),
        "versions": versions(),
        "plan": asdict(plan),
    }
    phase_table: list[tuple[str, Callable[[], Any]]] = [
        ("worker", bench.worker_path),
        ("accept", bench.accept_path),
        ("e2e", bench.end_to_end),
        ("options", bench.options),
        ("redis", bench.redis_ceiling),
    ]
    try:
        bench.redis_server.start()
        progress(f"{plan.mode} mode; redis-server on port {bench.redis_server.port}; logs in {bench.log_dir}")
        for name, function in phase_table:
            if name not in phases:
                continue
            progress(f"phase {name}: start")
            value = function()
            if name == "worker":
                results["worker_path"] = value
            elif name == "accept":
                results["accept_path"] = value
            elif name == "e2e":
                results["end_to_end"], results["saturation"], results["resources"] = value
            elif name == "options":
                results["options"] = value
            else:
                results["redis_ceiling"] = value
    finally:
        bench.stop_everything()
    if bench.profiles:
        results["profiles"] = bench.profiles
        (out_dir / "profile" / "summary.json").write_text(json.dumps(bench.profiles, indent=2) + "\n")
        progress(f"profiles (py-spy, raw collapsed stacks) in {out_dir / 'profile'}")
    progress(f"done in {time.monotonic() - _START:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run (about 1.5 min): checks only that every key is there"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default bench/out)")
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated phases to run ({', '.join(PHASES)}); partial runs are never committed",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"py-spy record every process of both stacks during their first {FIXED_RATE}/s step (perturbs the "
        "figures: such a run is never committed)",
    )
    args = parser.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the `finally` stops every process and Redis it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = QUICK if args.quick else FULL
    if args.profile:  # enough samples in the profiled step, quick or not
        plan = replace(plan, e2e_seconds=max(plan.e2e_seconds, 20.0))
    phases = {phase.strip() for phase in args.only.split(",") if phase.strip()}
    results = run(plan, args.out, phases, args.profile)
    complete = phases == set(PHASES) and not args.profile
    if not complete:
        print(json.dumps(results, indent=2))
        return 0
    results["summary"] = summary_rows(results)
    table = write_outputs(results, args.out, committed=not args.quick)
    print(table)
    missing = missing_keys(results)
    if missing:
        print(f"bench: results incomplete, missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"bench: results in {args.out / 'results.json'}" + ("" if args.quick else " and bench/results.json"))
    return 0
