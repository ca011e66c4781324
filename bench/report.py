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

from bench.plan import (
    BENCH_DIR,
    FIXED_RATE,
    RESOURCE_FIGURES,
    TARGET_ACCEPT_RATIO,
    TARGET_CPU_RATIO,
    TARGET_E2E_P99_MS_AT_50,
    TARGET_EVENTS_COST,
    TARGET_P99_RATIO_AT_FIXED,
    TARGET_SATURATION_RATIO,
    TARGET_WORKER_RATIO,
)


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
    ("end_to_end", "baseline_rates"),
    ("end_to_end", "at_fixed_rate", "ratio_p99"),
    ("saturation", "saturation_rate"),
    ("saturation", "baseline_saturation_rate"),
    ("saturation", "steps"),
    ("saturation", "baseline_steps"),
    ("saturation", "ratio"),
    *[
        ("resources", kind, key)
        for kind in ("project", "baseline")
        for key in (*RESOURCE_FIGURES, "memory_idle", "memory_end")
    ],
    ("resources", "ratio_cpu"),
    ("resources", "retention"),
    ("options", "configurations"),
    ("options", "events_cost"),
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
    for series in ("rates", "baseline_rates"):
        rates = {step.get("offered_per_s") for step in results.get("end_to_end", {}).get(series, [])}
        for rate in (50, 200):
            if rate not in rates:
                missing.append(f"end_to_end.{series}[{rate}/s]")
        for step in results.get("end_to_end", {}).get(series, []):
            for key in ("p50_ms", "p99_ms", "max_ms", "achieved_per_s", "cpu_s_per_1000"):
                if step.get(key) is None:
                    missing.append(f"end_to_end.{series}[{step.get('offered_per_s')}/s].{key}")
    for measure in ("worker_path", "accept_path"):
        if measure in results and results[measure].get("ratio", 0) is None:
            missing.append(f"{measure}.ratio (no value)")
    for path in (("resources", "ratio_cpu"), ("end_to_end", "at_fixed_rate", "ratio_p99"), ("options", "events_cost")):
        node: Any = results
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None and ".".join(path) not in missing:
            missing.append(f"{'.'.join(path)} (no value)")
    return missing


def summary_row(
    measure: str, project: Any = None, baseline: Any = None, ratio: Any = None, target: str = "", met: Any = None
) -> dict[str, Any]:
    return {"measure": measure, "project": project, "baseline": baseline, "ratio": ratio, "target": target, "met": met}


def at_least(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio >= target


def at_most(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio <= target


def total(memory: dict[str, dict[str, float]] | None, key: str = "rss_mib") -> float | None:
    return None if not memory else round(sum(service[key] for service in memory.values()), 1)


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

    def reached(rate: float | None, not_reached: bool) -> Any:
        return None if rate is None else (f">= {rate}" if not_reached else rate)

    rows.append(
        summary_row(
            "end to end: saturation rate (orders/s) vs bare chain",
            reached(sat["saturation_rate"], sat["not_reached"]),
            reached(sat["baseline_saturation_rate"], sat["baseline_not_reached"]),
            sat["ratio"],
            f">= {TARGET_SATURATION_RATIO}x",
            at_least(sat["ratio"], TARGET_SATURATION_RATIO),
        )
    )
    fixed = results["end_to_end"]["at_fixed_rate"]
    for pct, target in (("p50", None), ("p99", TARGET_P99_RATIO_AT_FIXED)):
        rows.append(
            summary_row(
                f"end to end at {FIXED_RATE}/s vs bare chain: {pct} ms, POST -> last hop done",
                fixed["project"][f"{pct}_ms"],
                fixed["baseline"][f"{pct}_ms"],
                fixed[f"ratio_{pct}"],
                f"<= {target}x" if target else "",
                at_most(fixed[f"ratio_{pct}"], target) if target else None,
            )
        )
    res = results["resources"]
    project, baseline = res["project"], res["baseline"]
    rows.append(
        summary_row(
            f"CPU s per 1,000 orders at {FIXED_RATE}/s (every process, Redis included)",
            project["cpu_s_per_1000"],
            baseline["cpu_s_per_1000"],
            res["ratio_cpu"],
            f"<= {TARGET_CPU_RATIO}x",
            at_most(res["ratio_cpu"], TARGET_CPU_RATIO),
        )
    )
    rows.append(
        summary_row(
            f"Redis commands per 1,000 orders at {FIXED_RATE}/s",
            project["redis_commands_per_1000"],
            baseline["redis_commands_per_1000"],
            res["ratio_redis_commands"],
        )
    )
    for moment in ("idle", "end"):
        p_rss, b_rss = total(project[f"memory_{moment}"]), total(baseline[f"memory_{moment}"])
        rows.append(
            summary_row(
                f"memory, RSS MiB summed over every process, {'idle' if moment == 'idle' else 'end of the run'}",
                p_rss,
                b_rss,
                None if not p_rss or not b_rss else round(p_rss / b_rss, 3),
            )
        )
    for key, label in (
        ("redis_keys_per_order", "Redis keys kept per order"),
        ("redis_key_bytes_per_order", "Redis bytes kept per order (MEMORY USAGE of its keys)"),
        ("redis_bytes_per_order", "Redis used_memory growth per order"),
    ):
        rows.append(summary_row(label, project[key], baseline[key]))
    options = results["options"]
    for name, entry in options["configurations"].items():
        rows.append(summary_row(f"options: CPU s per 1,000 orders at {FIXED_RATE}/s, {name}", entry["cpu_s_per_1000"]))
    cost = options["events_cost"]
    rows.append(
        summary_row(
            "options: task events on, extra CPU per order (vs off)",
            None if cost is None else f"{cost:+.1%}",
            target=f"<= {TARGET_EVENTS_COST:.0%}",
            met=None if cost is None else cost <= TARGET_EVENTS_COST,
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
        "bare Flask endpoint doing one send_task under the same gunicorn settings (bench/bare_flask.py); end to end "
        "= the same three hops as no-op tasks that only send the next one (bench/bare_chain.py, two `celery worker` "
        "processes, same settings and pools) behind the bare Flask endpoint. Ratios are project / baseline (for "
        "latencies, CPU and memory, > 1 means the project costs more).",
        "",
        "| end to end step | stack | offered/s | achieved/s | posted / accepted (202) / finished | p50 ms | p99 ms "
        "| max ms | HTTP p99 ms | CPU s / 1,000 | Redis cmds / order |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    e2e, sat = results["end_to_end"], results["saturation"]
    for label, series in (
        ("fixed rate", [*e2e["rates"], *e2e["baseline_rates"]]),
        ("ramp", [*sat["steps"], *sat["baseline_steps"]]),
    ):
        for step in series:
            per_order = step.get("redis_commands_per_1000")
            lines.append(
                f"| {label} | {'project' if step['stack'] == 'project' else 'bare chain'} | "
                f"{step['offered_per_s']:.0f} | {cell(step['achieved_per_s'])} | "
                f"{step['sent']} / {step['accepted']} / {step['notified']} | {cell(step['p50_ms'])} | "
                f"{cell(step['p99_ms'])} | {cell(step['max_ms'])} | {cell(step['http_p99_ms'])} | "
                f"{cell(step['cpu_s_per_1000'])} | {cell(None if per_order is None else per_order / 1000)} |"
            )
    res = results["resources"]
    project, baseline = res["project"], res["baseline"]
    lines += [
        "",
        f"Per service at {FIXED_RATE}/s: CPU seconds per 1,000 orders; memory as RSS summed over the service's "
        "processes (shared pages counted in each) / PSS (shared pages split), MiB, idle and at the end of the run.",
        "",
        "| service | CPU s / 1,000, project | bare chain | RSS / PSS idle, project | bare chain "
        "| RSS / PSS end, project | bare chain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def mem(entry: dict[str, Any], moment: str, service: str) -> str:
        values = (entry.get(f"memory_{moment}") or {}).get(service)
        return "-" if not values else f"{values['rss_mib']:.1f} / {values['pss_mib']:.1f}"

    for service in ("web", "orders-worker", "notifications-worker", "redis"):
        lines.append(
            f"| {service} | {cell((project['cpu_s_per_1000_by_service'] or {}).get(service))} | "
            f"{cell((baseline['cpu_s_per_1000_by_service'] or {}).get(service))} | {mem(project, 'idle', service)} | "
            f"{mem(baseline, 'idle', service)} | {mem(project, 'end', service)} | {mem(baseline, 'end', service)} |"
        )
    lines += ["", f"Redis commands per 1,000 orders at {FIXED_RATE}/s (top 12 of each):", ""]
    lines += ["| project | calls | bare chain | calls |", "| --- | ---: | --- | ---: |"]
    top_p = list((project["redis_commands_per_1000_by_command"] or {}).items())[:12]
    top_b = list((baseline["redis_commands_per_1000_by_command"] or {}).items())[:12]
    for index in range(max(len(top_p), len(top_b))):
        left = top_p[index] if index < len(top_p) else ("", None)
        right = top_b[index] if index < len(top_b) else ("", None)
        lines.append(f"| {left[0]} | {cell(left[1])} | {right[0]} | {cell(right[1])} |")
    lines += ["", f"Retention: {res['retention']}", ""]
    options = results["options"]
    lines += [
        f"Option costs (project at {FIXED_RATE}/s, {options['runs_per_configuration']} run(s) each, median):",
        "",
        "| configuration | environment | CPU s / 1,000 | runs | p99 ms |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for name, entry in options["configurations"].items():
        environment = ", ".join(f"{key}={value}" for key, value in entry["environment"].items())
        runs = ", ".join(f"{value:.2f}" for value in entry["cpu_s_per_1000_runs"])
        lines.append(f"| {name} | {environment} | {cell(entry['cpu_s_per_1000'])} | {runs} | {cell(entry['p99_ms'])} |")
    if options.get("note"):
        lines += ["", options["note"]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e, sat = results["end_to_end"], results["saturation"]
    series = {
        "project": sorted(e2e["rates"] + sat["steps"], key=lambda step: step["offered_per_s"]),
        "bare chain": sorted(e2e["baseline_rates"] + sat["baseline_steps"], key=lambda step: step["offered_per_s"]),
    }
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 5))

    def values(steps: list[dict[str, Any]], key: str) -> list[float]:
        return [step[key] if step.get(key) is not None else float("nan") for step in steps]

    for (name, steps), color in zip(series.items(), ("tab:blue", "tab:orange"), strict=True):
        rates = [step["offered_per_s"] for step in steps]
        left.plot(rates, values(steps, "p50_ms"), "o-", color=color, label=f"{name} p50")
        left.plot(rates, values(steps, "p99_ms"), "s--", color=color, label=f"{name} p99")
        middle.plot(rates, values(steps, "cpu_s_per_1000"), "o-", color=color, label=name)
    left.axvline(FIXED_RATE, color="grey", linestyle=":", linewidth=1)
    left.set_yscale("log")
    left.set_xlabel("offered orders/s")
    left.set_ylabel("POST -> last hop done (ms)")
    left.set_title("End-to-end latency vs offered rate")
    left.legend()
    left.grid(True, which="both", alpha=0.3)
    middle.set_xlabel("offered orders/s")
    middle.set_ylabel("CPU seconds per 1,000 orders (all processes)")
    middle.set_title("CPU per order vs offered rate")
    middle.set_ylim(bottom=0)
    middle.legend()
    middle.grid(True, alpha=0.3)

    labels = ["worker\ntasks/s"]
    project = [results["worker_path"]["project"]["tasks_per_s"]]
    baseline = [results["worker_path"]["baseline"]["tasks_per_s"]]
    ratios = [results["worker_path"]["ratio"]]
    for level, entry in results["accept_path"]["levels"].items():
        labels.append(f"accept req/s\n{level} conn")
        project.append(entry["project"]["rps"])
        baseline.append(entry["baseline"]["rps"])
        ratios.append(entry["ratio_rps"])
    labels.append("saturation\norders/s")
    project.append(sat["saturation_rate"] or 0)
    baseline.append(sat["baseline_saturation_rate"] or 0)
    ratios.append(sat["ratio"])
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
