"""Phase 3, end to end: open-loop rates through the three services, then the saturation ramp."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.plan import (
    REPO_ROOT,
    SATURATION_ACHIEVED_SHARE,
    SATURATION_P99_LIMIT_MS,
    TARGET_E2E_P99_MS_AT_50,
    percentile,
    progress,
    rounded,
)
from stack_testkit import console_script, free_port


class EndToEnd:
    """Phase 3 (a mixin of bench.run.Bench)."""

    # phase 3: end to end

    def offer(self, url: str, rate: float, seconds: float) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json", dir=self.scratch, delete=False) as handle:
            out = handle.name
        argv = [sys.executable, "-m", "bench.loadgen", "open", "--url", url, "--rate", str(rate)]
        subprocess.run([*argv, "--duration", str(seconds), "--out", out], check=True, cwd=REPO_ROOT, env=self.env())
        return json.loads(Path(out).read_text())

    def settle(self, order_ids: list[str]) -> dict[str, tuple[str, float, float]]:
        """Wait until every order's notification is recorded (or the timeout); returns what was seen."""
        client = self.redis()
        done: dict[str, tuple[str, float, float]] = {}
        pending = list(order_ids)
        deadline = time.monotonic() + self.plan.settle_timeout
        while pending and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for order_id in pending:
                pipe.hmget(f"order:{order_id}", "notification", "created_at", "updated_at")
            still = []
            for order_id, (state, created, updated) in zip(pending, pipe.execute(), strict=True):
                if state in ("sent", "failed"):
                    done[order_id] = (state, float(created), float(updated))
                else:
                    still.append(order_id)
            pending = still
            if pending:
                time.sleep(0.25)
        return done

    def e2e_step(self, url: str, rate: float, seconds: float) -> dict[str, Any]:
        data = self.offer(url, rate, seconds)
        records = data["records"]
        accepted = {record[3]: record for record in records if record[2] == 202 and record[3]}
        done = self.settle(list(accepted))
        sent = [(order_id, v) for order_id, v in done.items() if v[0] == "sent"]
        e2e = [1000 * (updated - created) for _, (_, created, updated) in sent]
        from_post = [1000 * (updated - accepted[order_id][0]) for order_id, (_, _, updated) in sent]
        http = [1000 * record[1] for record in records if record[1] is not None]
        if sent:
            window = max(v[2] for _, v in sent) - min(v[1] for _, v in sent)
            achieved = len(sent) / max(window, 1e-9) if len(sent) > 1 else None
        else:
            achieved = None
        return {
            "offered_per_s": rate,
            "seconds": seconds,
            "sent": data["sent"],
            "accepted": len(accepted),
            "http_statuses": {str(code): count for code, count in sorted(Counter(r[2] for r in records).items())},
            "notified": len(sent),
            "notification_failed": sum(1 for v in done.values() if v[0] == "failed"),
            "unfinished": len(accepted) - len(done),
            "offered_elapsed_s": round(data["elapsed"], 3),
            "achieved_per_s": rounded(achieved, 1),
            "p50_ms": rounded(percentile(e2e, 50)),
            "p90_ms": rounded(percentile(e2e, 90)),
            "p99_ms": rounded(percentile(e2e, 99)),
            "max_ms": rounded(max(e2e, default=None) if e2e else None),
            "from_post_p50_ms": rounded(percentile(from_post, 50)),
            "from_post_p99_ms": rounded(percentile(from_post, 99)),
            "http_p50_ms": rounded(percentile(http, 50)),
            "http_p99_ms": rounded(percentile(http, 99)),
        }

    def step_ok(self, step: dict[str, Any]) -> bool:
        achieved = step["achieved_per_s"] or 0.0
        p99 = step["p99_ms"]
        return (
            step["accepted"] == step["sent"]
            and step["unfinished"] == 0
            and achieved >= SATURATION_ACHIEVED_SHARE * step["offered_per_s"]
            and p99 is not None
            and p99 <= SATURATION_P99_LIMIT_MS
        )

    def end_to_end(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.redis().flushall()
        worker = self.start_project_worker()
        notifier_heartbeat = str(self.scratch / "notification.heartbeat")
        notifier = self.start(
            "notification-service", [console_script("notification-service")], WORKER_HEARTBEAT_FILE=notifier_heartbeat
        )
        port = str(free_port())
        web = self.start("order-service", [console_script("order-service")], PORT=port)
        url = f"http://127.0.0.1:{port}"
        worker.wait_log(" ready.")
        notifier.wait_log(" ready.")
        web.wait_http(f"{url}/healthz")
        warm = self.e2e_step(url, 20, 0.5)  # imports, connections, pool children
        progress(f"end to end: warm-up done ({warm['notified']} orders)")

        steps = []
        for rate in self.plan.e2e_rates:
            step = self.e2e_step(url, rate, self.plan.e2e_seconds)
            steps.append(step)
            progress(self.describe_step("end to end", step))
        ramp = []
        saturation = None
        for rate in self.plan.saturation_rates:
            step = self.e2e_step(url, rate, self.plan.saturation_seconds)
            step["ok"] = self.step_ok(step)
            ramp.append(step)
            progress(self.describe_step("saturation ramp", step) + ("" if step["ok"] else "  <- saturated"))
            if not step["ok"]:
                break
            saturation = rate
        for process in (web, notifier, worker):
            self.stop(process)
        at_50 = next((step for step in steps if step["offered_per_s"] == 50), None)
        e2e = {
            "description": "POST /orders -> notification recorded; latency = updated_at - created_at of the order",
            "seconds_per_rate": self.plan.e2e_seconds,
            "rates": steps,
            "target_p99_ms_at_50": TARGET_E2E_P99_MS_AT_50,
            "p99_ms_at_50": at_50["p99_ms"] if at_50 else None,
        }
        last_ok = bool(ramp) and ramp[-1]["ok"]
        sat = {
            "description": (
                f"highest offered rate whose step completed >= {SATURATION_ACHIEVED_SHARE:.0%} of it with every order "
                f"accepted and notified and p99 <= {SATURATION_P99_LIMIT_MS:.0f} ms"
            ),
            "seconds_per_step": self.plan.saturation_seconds,
            "steps": ramp,
            "saturation_rate": saturation,
            "not_reached": last_ok,
        }
        return e2e, sat

    @staticmethod
    def describe_step(phase: str, step: dict[str, Any]) -> str:
        return (
            f"{phase}: offered {step['offered_per_s']:.0f}/s -> achieved {step['achieved_per_s'] or 0:.0f}/s, "
            f"{step['notified']}/{step['sent']} notified, p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms, "
            f"max {step['max_ms']} ms (HTTP p99 {step['http_p99_ms']} ms)"
        )
