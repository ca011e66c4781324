"""Compare the running interpreter's distributions with requirements.lock (stdlib only).

    python lock_check.py requirements.lock

Exit status 0 when every distribution that is both installed and locked has the locked version;
otherwise one line per mismatch and status 1. The Nix check `locked-versions` runs it in the
images' Python environment (so a nixpkgs that ships other versions than the ones CI tested fails
there first), and the test suite runs it in the development environment.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
RELOCK = "re-lock with ./dev lock after updating nix/nixpkgs-versions.toml"


def canonical(name: str) -> str:
    """PEP 503 normalized name: `Typing_Extensions` and `typing-extensions` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock_text: str) -> dict[str, set[str]]:
    """Locked versions by name; a universal lock may pin one name per Python version (markers)."""
    locked: dict[str, set[str]] = {}
    for match in filter(None, map(PIN.match, lock_text.splitlines())):
        locked.setdefault(canonical(match[1]), set()).add(match[2])
    return locked


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def mismatches(locked: dict[str, set[str]], installed: dict[str, str]) -> list[str]:
    return [
        f"{name}: installed {installed[name]}, requirements.lock pins {' or '.join(sorted(versions))} ({RELOCK})"
        for name, versions in sorted(locked.items())
        if name in installed and installed[name] not in versions
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: lock_check.py PATH/TO/requirements.lock", file=sys.stderr)
        return 2
    locked = locked_versions(Path(argv[0]).read_text())
    problems = mismatches(locked, installed_versions())
    for line in problems:
        print(line)
    if not problems:
        print(f"lock_check: {len(locked)} locked distributions, every installed one at its locked version")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
