"""requirements.lock pins exactly the versions nixpkgs 26.05 ships (nix/nixpkgs-versions.toml), and the
check that the Nix build runs against the images' environment (nix/lock_check.py) works."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "nix"))

import lock_check  # noqa: E402


def test_the_lock_pins_every_nixpkgs_version() -> None:
    record = tomllib.loads((ROOT / "nix" / "nixpkgs-versions.toml").read_text())["packages"]
    locked = lock_check.locked_versions((ROOT / "requirements.lock").read_text())
    wrong = {
        name: (version, locked.get(lock_check.canonical(name)))
        for name, (version, *_) in record.items()
        if locked.get(lock_check.canonical(name)) != {version}
    }
    assert wrong == {}, "requirements.lock differs from nix/nixpkgs-versions.toml: run ./dev lock"


def test_this_environment_has_the_locked_versions() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "nix" / "lock_check.py"), str(ROOT / "requirements.lock")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_mismatch_is_one_line_naming_both_versions() -> None:
    locked = lock_check.locked_versions(
        "celery==5.6.3 \\\n    --hash=sha256:00\nRedis==7.4.1 ; python_version >= '3.11'\n"
    )
    problems = lock_check.mismatches(locked, {"celery": "5.7.0", "redis": "7.4.1", "flask": "3.1.2"})
    assert problems == [
        "celery: installed 5.7.0, requirements.lock pins 5.6.3 "
        "(re-lock with ./dev lock after updating nix/nixpkgs-versions.toml)"
    ]
