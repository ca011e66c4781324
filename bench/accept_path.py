"""Phase 2, the accept path: POST /orders vs a bare Flask endpoint doing one send_task."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.plan import POST_LUA, REPO_ROOT, TARGET_ACCEPT_RATIO, percentile, progress, ratio, rounded
from stack_testkit import console_script, free_port


class AcceptPath:
    """Phase 2 (a mixin of bench.run.Bench)."""

    # phase 2: accept path

    def load_closed(self, url: str, connections: int, seconds: int) -> dict[str, Any]:
        if shutil.which("wrk"):
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(POST_LUA)]
            output = subprocess.run([*argv, f"{url}/orders"], capture_output=True, text=True, check=True).stdout
            line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
            data = json.loads(line.removeprefix("WRK_JSON "))
            errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
            return {
                "requests": data["requests"],
                "errors": errors,
                "rps": round(data["requests"] / (data["duration_us"] / 1e6), 1),
                "p50_ms": round(data["p50_us"] / 1000, 3),
                "p99_ms": round(data["p99_us"] / 1000, 3),
                "max_ms": round(data["max_us"] / 1000, 3),
            }
        with tempfile.NamedTemporaryFile(suffix=".json", dir=self.scratch, delete=False) as handle:
            out = handle.name
        argv = [sys.executable, "-m", "bench.loadgen", "closed", "--url", url, "--concurrency", str(connections)]
        subprocess.run([*argv, "--duration", str(seconds), "--out", out], check=True, cwd=REPO_ROOT, env=self.env())
        data = json.loads(Path(out).read_text())
        latencies = data["latencies"]
        return {
            "requests": data["requests"],
            "errors": data["errors"],
            "rps": round(data["requests"] / data["elapsed"], 1),
            "p50_ms": rounded(1000 * (percentile(latencies, 50) or 0), 3),
            "p99_ms": rounded(1000 * (percentile(latencies, 99) or 0), 3),
            "max_ms": rounded(1000 * max(latencies, default=0), 3),
        }

    def accept_once(self, kind: str, run: int) -> dict[int, dict[str, Any]]:
        self.redis().flushall()
        port = str(free_port())
        if kind == "project":
            process = self.start("order-service", [console_script("order-service")], PORT=port)
        else:
            process = self.start("bare-flask", [sys.executable, "-m", "bench.bare_flask"], PORT=port)
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/healthz")
        self.load_closed(url, 8, self.plan.accept_warmup_seconds)  # warm both gunicorn workers
        results = {}
        for connections in self.plan.accept_levels:
            self.redis().delete("orders")
            result = self.load_closed(url, connections, self.plan.accept_seconds)
            results[connections] = result
            progress(
                f"accept path: {kind} run {run}, {connections:>2} connections: {result['rps']:.0f} req/s, "
                f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {result['errors']}"
            )
        self.stop(process)
        return results

    def accept_path(self) -> dict[str, Any]:
        runs: dict[str, list[dict[int, dict[str, Any]]]] = {"project": [], "baseline": []}
        for run in range(1, self.plan.accept_reps + 1):
            order = ("baseline", "project") if run % 2 else ("project", "baseline")
            for kind in order:
                runs[kind].append(self.accept_once("project" if kind == "project" else "bare", run))
        levels = {}
        for connections in self.plan.accept_levels:
            entry: dict[str, Any] = {}
            for kind in ("project", "baseline"):
                samples = [run[connections] for run in runs[kind]]
                entry[kind] = {
                    key: round(statistics.median(sample[key] for sample in samples), 3)
                    for key in ("rps", "p50_ms", "p99_ms", "max_ms")
                }
                entry[kind]["errors"] = sum(sample["errors"] for sample in samples)
                entry[kind]["runs"] = samples
            entry["ratio_rps"] = ratio(entry["project"]["rps"], entry["baseline"]["rps"])
            entry["ratio_p50"] = ratio(entry["project"]["p50_ms"], entry["baseline"]["p50_ms"])
            entry["ratio_p99"] = ratio(entry["project"]["p99_ms"], entry["baseline"]["p99_ms"])
            levels[str(connections)] = entry
        return {
            "description": "POST /orders: order-service under gunicorn vs a bare Flask endpoint doing one send_task",
            "tool": "wrk" if shutil.which("wrk") else "bench.loadgen (closed loop)",
            "seconds_per_level": self.plan.accept_seconds,
            "gunicorn": {
                "worker_class": "gevent",
                "workers": self.plan.web_concurrency,
                "connections": self.plan.web_connections,
            },
            "levels": levels,
            "target": TARGET_ACCEPT_RATIO,
        }
