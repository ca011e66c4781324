"""The report: machine and versions, the summary table, results.md, the plot and the output files."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.plan import BENCH_DIR, TARGET_ACCEPT_RATIO, TARGET_E2E_P99_MS_AT_50, TARGET_WORKER_RATIO


def machine() -> dict[str, Any]:
    memory_kib = 0
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "cpu": cpu_model,
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    def command(argv: list[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "missing"
        return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""

    redis_version = command(["redis-server", "--version"])
    redis_version = next((part[2:] for part in redis_version.split() if part.startswith("v=")), redis_version)
    return {
        "python": platform.python_version(),
        "celery": dist("celery"),
        "kombu": dist("kombu"),
        "redis_server": redis_version,
        "redis_py": dist("redis"),
        "flask": dist("flask"),
        "gunicorn": dist("gunicorn"),
        "wrk": command(["wrk", "--version"]).split(" [")[0] if shutil.which("wrk") else "missing",
    }


REQUIRED_KEYS: list[tuple[str, ...]] = [
    ("date",),
    ("mode",),
    ("machine", "cores"),
    ("machine", "memory_gib"),
    ("versions", "python"),
    ("versions", "celery"),
    ("versions", "redis_server"),
    ("worker_path", "project", "tasks_per_s"),
    ("worker_path", "baseline", "tasks_per_s"),
    ("worker_path", "ratio"),
    *[
        ("accept_path", "levels", level, kind, key)
        for level in ("1", "8", "32")
        for kind in ("project", "baseline")
        for key in ("rps", "p50_ms", "p99_ms")
    ],
    *[("accept_path", "levels", level, "ratio_rps") for level in ("1", "8", "32")],
    ("end_to_end", "rates"),
    ("end_to_end", "p99_ms_at_50"),
    ("saturation", "saturation_rate"),
    ("saturation", "steps"),
    ("redis_ceiling", "results", "lpush_c50", "ops_per_s"),
    ("redis_ceiling", "results", "rpop_c50", "ops_per_s"),
    ("summary",),
]


def missing_keys(results: dict[str, Any]) -> list[str]:
    missing = []
    for path in REQUIRED_KEYS:
        node: Any = results
        for key in path:
            if not isinstance(node, dict) or key not in node:
                missing.append(".".join(path))
                break
            node = node[key]
    rates = {step.get("offered_per_s") for step in results.get("end_to_end", {}).get("rates", [])}
    for rate in (50, 200):
        if rate not in rates:
            missing.append(f"end_to_end.rates[{rate}/s]")
    for step in results.get("end_to_end", {}).get("rates", []):
        for key in ("p50_ms", "p99_ms", "max_ms", "achieved_per_s"):
            if step.get(key) is None:
                missing.append(f"end_to_end.rates[{step.get('offered_per_s')}/s].{key}")
    for measure in ("worker_path", "accept_path"):
        if measure in results and results[measure].get("ratio", 0) is None:
            missing.append(f"{measure}.ratio (no value)")
    return missing


def summary_row(
    measure: str, project: Any = None, baseline: Any = None, ratio: Any = None, target: str = "", met: Any = None
) -> dict[str, Any]:
    return {"measure": measure, "project": project, "baseline": baseline, "ratio": ratio, "target": target, "met": met}


def at_least(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio >= target


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    worker = results["worker_path"]
    rows = [
        summary_row(
            f"worker path: tasks/s drained (prefork c={worker['concurrency']})",
            worker["project"]["tasks_per_s"],
            worker["baseline"]["tasks_per_s"],
            worker["ratio"],
            f">= {TARGET_WORKER_RATIO}x",
            at_least(worker["ratio"], TARGET_WORKER_RATIO),
        )
    ]
    for level, entry in results["accept_path"]["levels"].items():
        project, baseline = entry["project"], entry["baseline"]
        rows.append(
            summary_row(
                f"accept path: req/s at {level} connection(s)",
                project["rps"],
                baseline["rps"],
                entry["ratio_rps"],
                f">= {TARGET_ACCEPT_RATIO}x",
                at_least(entry["ratio_rps"], TARGET_ACCEPT_RATIO),
            )
        )
        for pct in ("p50", "p99"):
            rows.append(
                summary_row(
                    f"accept path: {pct} ms at {level} connection(s)",
                    project[f"{pct}_ms"],
                    baseline[f"{pct}_ms"],
                    entry[f"ratio_{pct}"],
                )
            )
    for step in results["end_to_end"]["rates"]:
        target = step["offered_per_s"] == 50
        rows.append(
            summary_row(
                f"end to end at {step['offered_per_s']:.0f}/s: p50 / p99 / max ms, achieved/s",
                f"{step['p50_ms']} / {step['p99_ms']} / {step['max_ms']}, {step['achieved_per_s']}",
                target=f"p99 < {TARGET_E2E_P99_MS_AT_50:.0f} ms" if target else "",
                met=(step["p99_ms"] is not None and step["p99_ms"] < TARGET_E2E_P99_MS_AT_50) if target else None,
            )
        )
    sat = results["saturation"]
    rate = sat["saturation_rate"]
    rows.append(
        summary_row(
            "end to end: saturation rate (orders/s)",
            None if rate is None else (f">= {rate}" if sat["not_reached"] else rate),
        )
    )
    for name, value in results["redis_ceiling"]["results"].items():
        rows.append(
            summary_row(f"redis ceiling: {name.replace('_c', ' ops/s, clients=')}", baseline=value["ops_per_s"])
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    m, v = results["machine"], results["versions"]
    lines = [
        f"Benchmark ({results['mode']} mode), {results['date']}: {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{m['cpu']}; "
        f"Python {v['python']}, Celery {v['celery']}, kombu {v['kombu']}, Redis {v['redis_server']}, "
        f"gunicorn {v['gunicorn']}, {v['wrk']}.",
        "",
        "| measure | project | baseline | ratio | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in results["summary"]:
        lines.append(
            f"| {row['measure']} | {cell(row['project'])} | {cell(row['baseline'])} | {cell(row['ratio'])} "
            f"| {row['target']} | {cell(row['met'])} |"
        )
    lines += [
        "",
        "Baselines: worker path = bare Celery app (bench/bare_celery.py, same settings, no-op task); accept path = "
        "bare Flask endpoint doing one send_task under the same gunicorn settings (bench/bare_flask.py). "
        "Ratios are project / baseline (for latencies, > 1 means slower).",
        "",
        "| end to end step | offered/s | achieved/s | posted / accepted (202) / notified | p50 ms | p99 ms | max ms "
        "| HTTP p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, steps in (("fixed rate", results["end_to_end"]["rates"]), ("ramp", results["saturation"]["steps"])):
        for step in steps:
            lines.append(
                f"| {label} | {step['offered_per_s']:.0f} | {cell(step['achieved_per_s'])} | "
                f"{step['sent']} / {step['accepted']} / {step['notified']} | {cell(step['p50_ms'])} | "
                f"{cell(step['p99_ms'])} | {cell(step['max_ms'])} | {cell(step['http_p99_ms'])} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(
        results["end_to_end"]["rates"] + results["saturation"]["steps"], key=lambda step: step["offered_per_s"]
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    rates = [step["offered_per_s"] for step in steps]
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^--")):
        left.plot(
            rates, [step[key] if step[key] is not None else float("nan") for step in steps], style, label=key[:-3]
        )
    left.axhline(
        TARGET_E2E_P99_MS_AT_50,
        color="grey",
        linestyle=":",
        label=f"target p99 at 50/s ({TARGET_E2E_P99_MS_AT_50:.0f} ms)",
    )
    left.set_yscale("log")
    left.set_xlabel("offered orders/s")
    left.set_ylabel("POST -> notification recorded (ms)")
    left.set_title("End-to-end latency vs offered rate")
    left.legend()
    left.grid(True, which="both", alpha=0.3)

    labels = ["worker\ntasks/s"]
    project = [results["worker_path"]["project"]["tasks_per_s"]]
    baseline = [results["worker_path"]["baseline"]["tasks_per_s"]]
    ratios = [results["worker_path"]["ratio"]]
    for level, entry in results["accept_path"]["levels"].items():
        labels.append(f"accept req/s\n{level} conn")
        project.append(entry["project"]["rps"])
        baseline.append(entry["baseline"]["rps"])
        ratios.append(entry["ratio_rps"])
    xs = range(len(labels))
    width = 0.38
    right.bar([x - width / 2 for x in xs], project, width, label="project")
    right.bar([x + width / 2 for x in xs], baseline, width, label="baseline (bare)")
    for x, p, r in zip(xs, project, ratios, strict=True):
        right.annotate(f"{r:.2f}x" if r is not None else "", (x - width / 2, p), ha="center", va="bottom")
    right.set_xticks(list(xs), labels)
    right.set_ylabel("per second")
    right.set_title("Throughput vs baselines (ratio = project / baseline)")
    right.legend()
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"celery-stack benchmark ({results['mode']}, {results['date']}, {results['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out_dir: Path, committed: bool) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(table)
    plot(results, out_dir / "bench.png")
    if committed:
        shutil.copyfile(out_dir / "results.json", BENCH_DIR / "results.json")
        shutil.copyfile(out_dir / "results.md", BENCH_DIR / "results.md")
        shutil.copyfile(out_dir / "bench.png", BENCH_DIR / "results.png")
    return table
