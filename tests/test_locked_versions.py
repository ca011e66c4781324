"""requirements.lock pins exactly what the flake ships (nix/nixpkgs-versions.toml) and nothing floats:
every other pin is an exception of nix/lock-rules.toml. The record states how each row was obtained,
nix/write_versions.py writes it from the flake's evaluation, and nix/lock_check.py reports a drift."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "nix"))

import lock_check  # noqa: E402
import write_versions  # noqa: E402

RECORD = lock_check.load_record(ROOT / "nix" / "nixpkgs-versions.toml")
RULES = lock_check.load_rules(ROOT / "nix" / "lock-rules.toml")
LOCK = (ROOT / "requirements.lock").read_text()


def explain(lock_text: str = LOCK, record: dict = RECORD) -> tuple[dict[str, str], list[str]]:
    return lock_check.explain(lock_check.parse_lock(lock_text), lock_check.with_provenance(record), RULES)


def test_every_pin_is_recorded_or_an_exception_and_nothing_floats() -> None:
    reasons, problems = explain()
    assert problems == [], "\n".join(problems) + "\n(./dev lock re-locks; nix/lock-rules.toml holds the exceptions)"
    # Which and why, for the record of this run (pytest -rA shows it).
    print("\n".join(f"{name}: {why}" for name, why in reasons.items()))
    recorded = {lock_check.canonical(name) for name in RECORD["packages"]}
    # The images' core is recorded, not an exception.
    assert {"celery", "kombu", "redis", "pydantic", "flask", "gunicorn"} <= recorded
    assert all(reasons[name].startswith("nixpkgs") for name in recorded & reasons.keys())


def test_the_record_says_how_each_row_was_obtained() -> None:
    rows = {"python": RECORD["python"], **RECORD["packages"]}
    for name, row in rows.items():
        assert row["provenance"] in ("evaluated", "estimated", "overridden"), name
        if row["provenance"] == "estimated":
            assert row["confidence"] in ("high", "medium", "low") and row["evidence"], name
        if row["provenance"] == "overridden":
            assert "nix/python-packages.nix" in row["evidence"], name
    pinned = json.loads((ROOT / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]["rev"]
    assert RECORD["source"]["nixpkgs"] == pinned, "the record is of another nixpkgs: nix run .#update-versions"


def test_the_exceptions_are_in_no_nix_environment() -> None:
    recorded = {lock_check.canonical(name) for name in RECORD["packages"]}
    for table in ("development-only", "upstream-only"):
        assert not recorded & {lock_check.canonical(name) for name in RULES[table]}, table
    # Each bound nixpkgs ignores names a recorded distribution.
    assert {lock_check.canonical(name) for name in RULES["ignored-bounds"]} <= recorded


def test_a_floating_pin_and_a_drift_are_each_one_line() -> None:
    record = {
        "python": {"version": "3.13.13"},
        "packages": {"celery": {"version": "5.6.3", "provenance": "evaluated"}},
    }
    lock = (
        "celery==5.6.4 \\\n    --hash=sha256:00\n    # via -r requirements.in\n"
        "left-pad==1.0 \\\n    --hash=sha256:00\n    # via celery\n"
        "colorama==0.4.6 ; sys_platform == 'win32' \\\n    --hash=sha256:00\n    # via left-pad\n"
    )
    reasons, problems = explain(lock, record)
    assert problems == [
        "celery: requirements.lock pins 5.6.4, nixpkgs ships 5.6.3 "
        "(re-lock with ./dev lock; after nix flake update: nix run .#update-versions)",
        "left-pad==1.0 floats: in no Nix environment (nix/nixpkgs-versions.toml) and not "
        "development-only (nix/lock-rules.toml); needed by celery",
    ]
    assert reasons["colorama"].startswith("not installed on Python 3.13.13")


def test_a_pin_only_development_tools_need_is_development_only() -> None:
    lock = (
        "schemathesis==4.19.0 \\\n    --hash=sha256:00\n    # via -r requirements.in\n"
        "harfile==0.6.0 \\\n    --hash=sha256:00\n    # via schemathesis\n"
    )
    reasons, problems = explain(lock, {"python": {"version": "3.13.13"}, "packages": {}})
    assert problems == []
    assert reasons["harfile"].startswith("development-only, through schemathesis")


def test_the_record_is_written_from_the_flakes_evaluation() -> None:
    evaluated = {
        "python": {"attribute": "python313", "version": "3.13.13"},
        "packages": {
            "celery": {"version": "5.6.3", "environments": ["image/worker", "check/integration"]},
            "click-repl": {"version": "0.3.0-unstable-2026-03-26", "environments": ["dev-shell"]},
        },
    }
    record = tomllib.loads(write_versions.from_evaluation(evaluated, "8f0500b9660505dc3cb647775fe9a978a74b5283"))
    assert record["python"] == {"attribute": "python313", "version": "3.13.13", "provenance": "evaluated"}
    assert record["packages"]["celery"] == {
        "version": "5.6.3",
        "provenance": "evaluated",
        "environments": ["check/integration", "image/worker"],
    }
    # A git snapshot is not on the package index: the lock pins the release it follows.
    assert lock_check.recorded_lock_versions(record)["click-repl"] == "0.3.0"
    assert record["source"]["nixpkgs"].startswith("8f0500b9")


def test_this_environment_has_the_locked_versions() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "nix" / "lock_check.py"), str(ROOT / "requirements.lock")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_installed_mismatch_is_one_line_naming_both_versions() -> None:
    locked = lock_check.locked_versions(
        "celery==5.6.3 \\\n    --hash=sha256:00\nRedis==7.4.1 ; python_version >= '3.11'\n"
    )
    problems = lock_check.mismatches(locked, {"celery": "5.7.0", "redis": "7.4.1", "flask": "3.1.2"})
    assert problems == [
        "celery: installed 5.7.0, requirements.lock pins 5.6.3 "
        "(re-lock with ./dev lock; after nix flake update: nix run .#update-versions)"
    ]
