"""Phase 5, option costs: CPU per order of the project at the fixed rate with each switch flipped.

The switches are environment variables of every service (common_tasks.config): `CELERY_TASK_EVENTS`
(true/false, default true: the workers publish Celery task events) and `LOG_TASK_LINES` (`outcome`,
the default: one line per task outcome; `celery`: Celery's own received/succeeded lines). Each
configuration runs on a freshly started project stack, in turn (the order rotates between runs).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.plan import FIXED_RATE, TARGET_EVENTS_COST, progress, ratio

# name -> the environment of the project's services
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "default (events on, outcome lines)": {"CELERY_TASK_EVENTS": "true", "LOG_TASK_LINES": "outcome"},
    "events off": {"CELERY_TASK_EVENTS": "false", "LOG_TASK_LINES": "outcome"},
    "Celery's logging": {"CELERY_TASK_EVENTS": "true", "LOG_TASK_LINES": "celery"},
}
DEFAULT, EVENTS_OFF, CELERY_LOGGING = CONFIGURATIONS


class Options:
    """Phase 5 (a mixin of bench.run.Bench)."""

    # phase 5: option costs

    def option_run(self, name: str) -> dict[str, Any]:
        (stack,) = self.start_stacks(("project",), **CONFIGURATIONS[name])
        if self.plan.option_warmup:
            self.e2e_step(stack, 20, 0.5)  # imports, connections, pool children
        step = self.e2e_step(stack, FIXED_RATE, self.plan.option_seconds)
        self.stop_stack(stack)
        progress(
            f"options: {name}: {step['cpu_s_per_1000']} CPU s per 1000 orders, p99 {step['p99_ms']} ms, "
            f"{step['notified']}/{step['sent']} finished"
        )
        return step

    def options(self) -> dict[str, Any]:
        names = list(CONFIGURATIONS)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for rep in range(self.plan.option_reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                runs[name].append(self.option_run(name))
        configurations = {}
        for name in names:
            cpu = [run["cpu_s_per_1000"] for run in runs[name] if run["cpu_s_per_1000"] is not None]
            configurations[name] = {
                "environment": CONFIGURATIONS[name],
                "cpu_s_per_1000": round(statistics.median(cpu), 3) if cpu else None,
                "cpu_s_per_1000_runs": cpu,
                "cpu_s_per_1000_by_service": runs[name][-1]["cpu_s_per_1000_by_service"],
                "p99_ms": statistics.median(run["p99_ms"] for run in runs[name] if run["p99_ms"] is not None)
                if any(run["p99_ms"] is not None for run in runs[name])
                else None,
                "orders": sum(run["notified"] for run in runs[name]),
            }
        events_ratio = ratio(configurations[DEFAULT]["cpu_s_per_1000"], configurations[EVENTS_OFF]["cpu_s_per_1000"])
        logging_ratio = ratio(
            configurations[DEFAULT]["cpu_s_per_1000"], configurations[CELERY_LOGGING]["cpu_s_per_1000"]
        )
        return {
            "description": (
                f"CPU seconds per 1,000 orders of the project stack at {FIXED_RATE}/s for "
                f"{self.plan.option_seconds:.0f} s, per configuration (median of the runs)"
            ),
            "rate": FIXED_RATE,
            "runs_per_configuration": self.plan.option_reps,
            "configurations": configurations,
            "events_cost": None if events_ratio is None else round(events_ratio - 1, 3),
            "target_events_cost": TARGET_EVENTS_COST,
            "outcome_vs_celery_logging": logging_ratio,
        }
