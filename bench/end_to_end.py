"""Phase 3, end to end: the project's three services against the same three hops in bare Celery.

Both stacks run side by side, each on its own redis-server (bench/harness.py: Stack), and are
loaded in turn (alternating which goes first): fixed open-loop rates, then a saturation ramp. Every
step measures, from the client, the time from each POST's due time to the moment the last hop
recorded the order as finished (the project: the order record's `updated_at`, written by
`orders.record_notification`; the bare chain: `bench:done`, written by its last no-op hop), and,
around the step, the CPU seconds of every process of the stack (Redis included), the Redis
commands it ran and the memory it holds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import Profiler, Stack
from bench.plan import (
    FIXED_RATE,
    REPO_ROOT,
    RESOURCE_FIGURES,
    SATURATION_ACHIEVED_SHARE,
    SATURATION_P99_LIMIT_MS,
    TARGET_CPU_RATIO,
    TARGET_E2E_P99_MS_AT_50,
    TARGET_P99_RATIO_AT_FIXED,
    TARGET_SATURATION_RATIO,
    percentile,
    progress,
    ratio,
    rounded,
)

KINDS = ("project", "bare")
# What the project's store keeps per order, and for how long (order-store/src/order_store/store.py,
# notification-service/src/notification_service/ledger.py).
RETENTION = (
    "Nothing the project keeps per order expires. order-store keeps `order:<id>` (a hash: status, e-mail, "
    "items, total, notification state, timestamps) forever, and `orders:open` (a sorted set) holds the "
    "order only until its notification outcome is recorded. notification-service keeps "
    "`notification:<id>` (delivered count, outcome, updated_at) forever; its claim "
    "`notification:<id>:claim` is deleted when the delivery is recorded and would otherwise expire with "
    "the delivery's hard time limit (40 s by default). Celery keeps nothing: results are ignored "
    "(task_ignore_result; result_expires 3600 s would apply otherwise) and kombu's unacked entries go "
    "with the ack. So 2 keys per order stay until someone deletes them; the bare chain keeps none."
)


def step_ok(step: dict[str, Any]) -> bool:
    achieved = step["achieved_per_s"] or 0.0
    p99 = step["p99_ms"]
    return (
        step["accepted"] == step["sent"]
        and step["unfinished"] == 0
        and achieved >= SATURATION_ACHIEVED_SHARE * step["offered_per_s"]
        and p99 is not None
        and p99 <= SATURATION_P99_LIMIT_MS
    )


def usage(before: dict[str, Any], after: dict[str, Any], orders: int) -> dict[str, Any]:
    """What the stack spent between two snapshots, per 1,000 finished orders."""
    per = 1000 / orders if orders else None
    cpu = {name: after["cpu"][name] - before["cpu"].get(name, 0.0) for name in after["cpu"]}
    calls = Counter(after["commands"])
    calls.subtract(before["commands"])
    calls.subtract(after["own_commands"])  # the harness's polls and the first snapshot's INFO
    commands = {name: count for name, count in calls.items() if count > 0}
    total_cpu = sum(cpu.values())
    bytes_held = after["used_memory"] - before["used_memory"] - (after["marker_bytes"] - before["marker_bytes"])
    return {
        "cpu_s": round(total_cpu, 3),
        "cpu_s_per_1000": rounded(total_cpu * per if per else None, 3),
        "cpu_s_per_1000_by_service": {name: rounded(v * per, 3) if per else None for name, v in cpu.items()},
        "redis_commands_per_1000": rounded(sum(commands.values()) * per if per else None, 1),
        "redis_commands_per_1000_by_command": {
            name: round(count * per, 1) for name, count in sorted(commands.items(), key=lambda kv: -kv[1])
        }
        if per
        else {},
        "redis_keys_per_order": rounded((after["keys"] - before["keys"]) / orders if orders else None, 3),
        "redis_bytes_per_order": rounded(bytes_held / orders if orders else None, 1),
        "memory_end": after["memory"],
    }


def median_of(values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


def combine(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one step: counts summed, figures the median of the runs (per key)."""
    if len(steps) == 1:
        return {**steps[0], "runs": 1}
    combined: dict[str, Any] = {"runs": len(steps), "each": steps}
    for key, value in steps[0].items():
        values = [step.get(key) for step in steps]
        if key in ("sent", "accepted", "notified", "unfinished", "seconds"):
            combined[key] = sum(values)
        elif key == "http_statuses":
            combined[key] = dict(sum((Counter(v) for v in values), Counter()))
        elif isinstance(value, dict) and key != "memory_end":
            names = {name for v in values if isinstance(v, dict) for name in v}
            combined[key] = {name: median_of([v.get(name) for v in values if isinstance(v, dict)]) for name in names}
            if all(isinstance(x, float | int | type(None)) for x in combined[key].values()):
                combined[key] = dict(sorted(combined[key].items(), key=lambda kv: -(kv[1] or 0)))
        elif isinstance(value, float | int) and not isinstance(value, bool):
            combined[key] = median_of(values)
        else:
            combined[key] = values[-1]
    return combined


class EndToEnd:
    """Phase 3 (a mixin of bench.run.Bench)."""

    # phase 3: end to end

    def offer(self, url: str, rate: float, seconds: float) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json", dir=self.scratch, delete=False) as handle:
            out = handle.name
        argv = [sys.executable, "-m", "bench.loadgen", "open", "--url", url, "--rate", str(rate)]
        subprocess.run([*argv, "--duration", str(seconds), "--out", out], check=True, cwd=REPO_ROOT, env=self.env())
        return json.loads(Path(out).read_text())

    def wait_finished(self, stack: Stack, deadline: float) -> None:
        """Until the stack has finished every accepted order (one cheap command every 50 ms)."""
        while stack.unfinished() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the last hop's acknowledgement

    def e2e_step(self, stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
        before = stack.snapshot()
        data = self.offer(stack.url, rate, seconds)
        records = data["records"]
        accepted = {record[3]: record for record in records if record[2] == 202 and record[3]}
        stack.expected_done += len(accepted)
        deadline = time.monotonic() + self.plan.settle_timeout
        self.wait_finished(stack, deadline)
        after = stack.snapshot()
        done = stack.completion_times(list(accepted))
        while len(done) < len(accepted) and time.monotonic() < deadline:  # a straggler the counter missed
            time.sleep(0.25)
            done = stack.completion_times(list(accepted))
        e2e = [1000 * (finished - accepted[order_id][0]) for order_id, (finished, _) in done.items()]
        inside = [1000 * (finished - started) for finished, started in done.values() if started is not None]
        http = [1000 * record[1] for record in records if record[1] is not None]
        if len(done) > 1:
            window = max(finished for finished, _ in done.values()) - min(accepted[i][0] for i in done)
            achieved = len(done) / max(window, 1e-9)
        else:
            achieved = None
        step = {
            "stack": stack.kind,
            "offered_per_s": rate,
            "seconds": seconds,
            "sent": data["sent"],
            "accepted": len(accepted),
            "http_statuses": {str(code): count for code, count in sorted(Counter(r[2] for r in records).items())},
            "notified": len(done),
            "unfinished": len(accepted) - len(done),
            "offered_elapsed_s": round(data["elapsed"], 3),
            "achieved_per_s": rounded(achieved, 1),
            "p50_ms": rounded(percentile(e2e, 50)),
            "p90_ms": rounded(percentile(e2e, 90)),
            "p99_ms": rounded(percentile(e2e, 99)),
            "max_ms": rounded(max(e2e) if e2e else None),
            "inside_p50_ms": rounded(percentile(inside, 50)),
            "inside_p99_ms": rounded(percentile(inside, 99)),
            "http_p50_ms": rounded(percentile(http, 50)),
            "http_p99_ms": rounded(percentile(http, 99)),
        }
        step.update(usage(before, after, len(done)))
        step["redis_key_bytes_per_order"] = stack.kept_bytes(list(done))
        return step

    def run_step(self, stack: Stack, rate: float, seconds: float, phase: str) -> dict[str, Any]:
        profiler = None
        if self.profile_dir is not None and rate == FIXED_RATE and stack.kind not in self.profiled:
            self.profiled.add(stack.kind)
            profiler = Profiler(self.profile_dir)
            profiler.start(stack, seconds)
        step = self.e2e_step(stack, rate, seconds)
        if profiler is not None:
            self.profiles.extend(profiler.finish())
        step["ok"] = step_ok(step)
        progress(self.describe_step(phase, step))
        return step

    def end_to_end(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        stacks = self.start_stacks(KINDS)
        for stack in stacks:
            warm = self.e2e_step(stack, 20, 0.5)  # imports, connections, pool children
            progress(f"end to end: {stack.kind} warm-up done ({warm['notified']} orders)")
        time.sleep(1.0)
        idle = {stack.kind: stack.snapshot()["memory"] for stack in stacks}

        def alternate(turn: int) -> list[Stack]:
            return stacks if turn % 2 == 0 else stacks[::-1]

        fixed: dict[str, dict[float, list[dict[str, Any]]]] = {kind: {} for kind in KINDS}
        turn = 0
        for rep in range(self.plan.e2e_fixed_reps):
            for rate in self.plan.e2e_rates:
                for stack in alternate(turn):
                    step = self.run_step(stack, rate, self.plan.e2e_seconds, f"end to end, run {rep + 1}")
                    fixed[stack.kind].setdefault(rate, []).append(step)
                turn += 1

        ramps: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        last_ok: dict[str, float | None] = {kind: None for kind in KINDS}
        failed_at: dict[str, float | None] = {kind: None for kind in KINDS}

        def ramp_step(stack: Stack, rate: float, label: str) -> None:
            step = self.run_step(stack, rate, self.plan.saturation_seconds, f"{label} ({stack.kind})")
            ramps[stack.kind].append(step)
            if step["ok"]:
                last_ok[stack.kind] = rate
            else:
                failed_at[stack.kind] = rate

        for rate in self.plan.saturation_rates:
            for stack in alternate(turn):
                if failed_at[stack.kind] is None:
                    ramp_step(stack, rate, "ramp")
            turn += 1
            if all(failed_at[kind] is not None for kind in KINDS):
                break
        for _ in range(self.plan.saturation_refine):  # halve the interval between the last good and the failed rate
            for stack in alternate(turn):
                low, high = last_ok[stack.kind], failed_at[stack.kind]
                if low is None or high is None or high - low < 10:
                    continue
                ramp_step(stack, round((low + high) / 2), "ramp, refined")
            turn += 1
        for stack in stacks:
            self.stop_stack(stack)

        rates = {kind: [combine(fixed[kind][rate]) for rate in self.plan.e2e_rates] for kind in KINDS}
        at = {kind: next((s for s in rates[kind] if s["offered_per_s"] == FIXED_RATE), None) for kind in KINDS}

        def figure(kind: str, key: str) -> Any:
            return at[kind][key] if at[kind] else None

        e2e = {
            "description": (
                "POST /orders -> the last hop has recorded the order; latency = finished at (written by the last "
                "hop) - the POST's due time (open loop); the project vs the bare chain (bench/bare_chain.py)"
            ),
            "seconds_per_rate": self.plan.e2e_seconds,
            "runs_per_rate": self.plan.e2e_fixed_reps,
            "fixed_rate": FIXED_RATE,
            "rates": rates["project"],
            "baseline_rates": rates["bare"],
            "target_p99_ms_at_50": TARGET_E2E_P99_MS_AT_50,
            "p99_ms_at_50": figure("project", "p99_ms") if FIXED_RATE == 50 else None,
            "at_fixed_rate": {
                "project": {key: figure("project", key) for key in ("p50_ms", "p99_ms", "max_ms")},
                "baseline": {key: figure("bare", key) for key in ("p50_ms", "p99_ms", "max_ms")},
                "ratio_p50": ratio(figure("project", "p50_ms"), figure("bare", "p50_ms")),
                "ratio_p99": ratio(figure("project", "p99_ms"), figure("bare", "p99_ms")),
                "target_ratio_p99": TARGET_P99_RATIO_AT_FIXED,
            },
        }
        sat = {
            "description": (
                f"highest offered rate whose step completed >= {SATURATION_ACHIEVED_SHARE:.0%} of it with every order "
                f"accepted and finished and p99 <= {SATURATION_P99_LIMIT_MS:.0f} ms; coarse ramp, then "
                f"{self.plan.saturation_refine} halvings of the last interval"
            ),
            "seconds_per_step": self.plan.saturation_seconds,
            "steps": ramps["project"],
            "baseline_steps": ramps["bare"],
            "saturation_rate": last_ok["project"],
            "baseline_saturation_rate": last_ok["bare"],
            "not_reached": failed_at["project"] is None,
            "baseline_not_reached": failed_at["bare"] is None,
            # No ratio when the bare chain never failed (its limit is unknown); when only the project
            # never failed, the ratio is a lower bound.
            "ratio": None if failed_at["bare"] is None else ratio(last_ok["project"], last_ok["bare"]),
            "target": TARGET_SATURATION_RATIO,
        }
        keys = RESOURCE_FIGURES
        resources: dict[str, Any] = {
            "description": (
                f"per 1,000 orders finished in the {FIXED_RATE}/s runs: CPU seconds (user + system, every process of "
                "the stack and its children, Redis included), Redis commands (INFO commandstats deltas); memory "
                "per service idle (after the warm-up) and at the end of the run; Redis keys and bytes kept per "
                "order once finished (redis_bytes_per_order: used_memory delta, allocator overhead included; "
                "redis_key_bytes_per_order: MEMORY USAGE of the kept keys, median of 25 orders)"
            ),
            "rate": FIXED_RATE,
            "retention": RETENTION,
        }
        for kind, label in (("project", "project"), ("bare", "baseline")):
            entry = {key: figure(kind, key) for key in keys}
            entry["orders"] = figure(kind, "notified")
            entry["memory_idle"] = idle[kind]
            last = fixed[kind].get(FIXED_RATE, [{}])[-1]
            entry["memory_end"] = last.get("memory_end")
            resources[label] = entry
        resources["ratio_cpu"] = ratio(resources["project"]["cpu_s_per_1000"], resources["baseline"]["cpu_s_per_1000"])
        resources["ratio_redis_commands"] = ratio(
            resources["project"]["redis_commands_per_1000"], resources["baseline"]["redis_commands_per_1000"]
        )
        resources["target_ratio_cpu"] = TARGET_CPU_RATIO
        return e2e, sat, resources

    @staticmethod
    def describe_step(phase: str, step: dict[str, Any]) -> str:
        return (
            f"{phase}: {step['stack']} offered {step['offered_per_s']:.0f}/s -> achieved "
            f"{step['achieved_per_s'] or 0:.0f}/s, {step['notified']}/{step['sent']} finished, p50 {step['p50_ms']} "
            f"ms, p99 {step['p99_ms']} ms, max {step['max_ms']} ms; {step['cpu_s_per_1000']} CPU s and "
            f"{step['redis_commands_per_1000']} Redis commands per 1000 orders" + ("" if step["ok"] else "  <- failed")
        )
