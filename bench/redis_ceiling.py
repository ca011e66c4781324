"""Phase 4, the Redis ceiling: redis-benchmark LPUSH/RPOP against the same redis-server."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from typing import Any

from bench.plan import progress


class RedisCeiling:
    """Phase 4 (a mixin of bench.run.Bench)."""

    # phase 4: Redis ceiling

    def redis_ceiling(self) -> dict[str, Any]:
        if not shutil.which("redis-benchmark"):
            raise RuntimeError("redis-benchmark is not on PATH (Debian/Ubuntu: apt-get install redis-tools)")
        self.redis().flushall()
        results: dict[str, Any] = {}
        for clients, requests in ((50, self.plan.redis_requests), (1, max(10_000, self.plan.redis_requests // 10))):
            argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.redis_server.port), "-t", "lpush,rpop"]
            argv += ["-n", str(requests), "-c", str(clients), "--csv"]
            output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            for row in csv.DictReader(io.StringIO(output)):
                name = f"{row['test'].lower()}_c{clients}"
                results[name] = {"ops_per_s": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"])}
                progress(f"redis ceiling: {row['test']} with {clients} client(s): {float(row['rps']):.0f} ops/s")
        self.redis().flushall()
        return {"description": "redis-benchmark against the benchmark's redis-server", "results": results}


# --- report ----------------------------------------------------------------------------------------
