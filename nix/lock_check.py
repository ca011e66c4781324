"""requirements.lock against the versions nixpkgs ships (stdlib only, plus `packaging` when present).

    python lock_check.py requirements.lock              # this interpreter's distributions
    python lock_check.py --explain requirements.lock    # every pin: where it comes from, or why it is wrong

Every pin of the lock is one of:
- in nix/nixpkgs-versions.toml (the distributions of the flake's Python environments), at the version
  recorded there;
- upstream-only (nix/lock-rules.toml [upstream-only]): required by a package's own metadata, left
  out by nixpkgs' package, at the version that rule gives;
- development-only: a root named in nix/lock-rules.toml [development-only], or pinned only because
  such roots need it (the lock's `# via` lines say who needs what);
- not installed on the Python the images run (its marker excludes it).
Anything else floats at whatever the package index had when the lock was made, and is reported.

Without --explain, the running interpreter's distributions are compared with the lock instead (exit
status 1 and one line per difference): the test suite runs it in the development environment.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

NIX = Path(__file__).resolve().parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
VIA_ONE = re.compile(r"^\s+# via (\S.*)$")
VIA_MANY = re.compile(r"^\s+#   (\S.*)$")
RELOCK = "re-lock with ./dev lock; after nix flake update: nix run .#update-versions"
ROOT = "-r requirements.in"


def canonical(name: str) -> str:
    """PEP 503 normalized name: `Typing_Extensions` and `typing-extensions` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    versions: set[str] = field(default_factory=set)
    markers: list[str | None] = field(default_factory=list)
    # Who needs it: canonical names, or ROOT for requirements.in itself.
    via: set[str] = field(default_factory=set)


def parse_lock(lock_text: str) -> dict[str, Pin]:
    """Pins by name; a universal lock may pin one name per Python version (markers)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in lock_text.splitlines():
        if match := PIN.match(line):
            current = pins.setdefault(canonical(match[1]), Pin())
            current.versions.add(match[2])
            current.markers.append(match[3])
        elif current is not None and (match := VIA_ONE.match(line) or VIA_MANY.match(line)):
            who = match[1].strip()
            if who.startswith("-r "):
                current.via.add(ROOT)
            elif not who.startswith("-"):  # --override, --constraint: not a dependant
                current.via.add(canonical(who))
    return pins


def locked_versions(lock_text: str) -> dict[str, set[str]]:
    return {name: pin.versions for name, pin in parse_lock(lock_text).items()}


def load_record(path: Path = NIX / "nixpkgs-versions.toml") -> dict:
    return tomllib.loads(path.read_text())


def load_rules(path: Path = NIX / "lock-rules.toml") -> dict:
    return tomllib.loads(path.read_text())


def recorded_lock_versions(record: dict) -> dict[str, str]:
    """The version the lock must pin for each recorded distribution: `locked` where nixpkgs builds
    something the index does not have (a git snapshot), else the recorded version."""
    return {canonical(name): row.get("locked", row["version"]) for name, row in record["packages"].items()}


def applies_to_images(marker: str | None, python_version: str) -> bool:
    """Whether a pin with this marker is installed on the images' Python (Linux)."""
    if marker is None:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # no packaging: count it as installed (the stricter reading)
        return True
    major_minor = ".".join(python_version.split(".")[:2])
    return Marker(marker).evaluate(
        {
            "python_version": major_minor,
            "python_full_version": python_version,
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "implementation_name": "cpython",
        }
    )


def explain(pins: dict[str, Pin], record: dict, rules: dict) -> tuple[dict[str, str], list[str]]:
    """(why each pin is in the lock, problems): see the module docstring."""
    wanted = recorded_lock_versions(record)
    upstream_only = {canonical(name): rule for name, rule in rules["upstream-only"].items()}
    python_version = record["python"]["version"]
    dev_roots = {canonical(name): why for name, why in rules["development-only"].items()}
    memo: dict[str, str | None] = {}

    def development_root(name: str, seen: frozenset[str] = frozenset()) -> str | None:
        """The development-only root that brings `name`, or None when anything else needs it."""
        if name in dev_roots:
            return name
        if name not in memo:
            pin = pins.get(name)
            if pin is None or ROOT in pin.via or not pin.via or name in wanted:
                memo[name] = None
            else:
                roots = [development_root(parent, seen | {name}) for parent in pin.via - seen]
                memo[name] = roots[0] if roots and all(roots) else None
        return memo[name]

    reasons: dict[str, str] = {}
    problems: list[str] = []
    for name in sorted((dev_roots.keys() | upstream_only.keys()) & wanted.keys()):
        problems.append(f"{name}: an exception in nix/lock-rules.toml, but a Nix environment has it")
    for name, pin in sorted(pins.items()):
        pinned = " or ".join(sorted(pin.versions))
        if name in wanted:
            if pin.versions != {wanted[name]}:
                problems.append(f"{name}: requirements.lock pins {pinned}, nixpkgs ships {wanted[name]} ({RELOCK})")
            reasons[name] = f"nixpkgs ({record['packages_provenance'][name]})"
        elif name in upstream_only:
            rule = upstream_only[name]
            if pin.versions != {rule["version"]}:
                rule_says = f"nix/lock-rules.toml {rule['version']}"
                problems.append(f"{name}: requirements.lock pins {pinned}, {rule_says} ({RELOCK})")
            reasons[name] = f"upstream-only: {rule['reason']}"
        elif not any(applies_to_images(marker, python_version) for marker in pin.markers):
            reasons[name] = f"not installed on Python {python_version} ({'; '.join(filter(None, pin.markers))})"
        elif root := development_root(name):
            reasons[name] = "development-only" + ("" if root == name else f", through {root}") + f": {dev_roots[root]}"
        else:
            needed_by = ", ".join(sorted(pin.via)) or "nothing"
            problems.append(
                f"{name}=={pinned} floats: in no Nix environment (nix/nixpkgs-versions.toml) and not "
                f"development-only (nix/lock-rules.toml); needed by {needed_by}"
            )
    return reasons, problems


def with_provenance(record: dict) -> dict:
    """The record with `packages_provenance`: canonical name -> how its row was obtained."""

    def provenance_of(row: dict) -> str:
        return row.get("provenance", "?") + (f", {row['confidence']} confidence" if "confidence" in row else "")

    provenance = {canonical(name): provenance_of(row) for name, row in record["packages"].items()}
    return record | {"packages_provenance": provenance}


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def mismatches(locked: dict[str, set[str]], installed: dict[str, str]) -> list[str]:
    return [
        f"{name}: installed {installed[name]}, requirements.lock pins {' or '.join(sorted(versions))} ({RELOCK})"
        for name, versions in sorted(locked.items())
        if name in installed and installed[name] not in versions
    ]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--explain"] and len(argv) == 2:
        reasons, problems = explain(parse_lock(Path(argv[1]).read_text()), with_provenance(load_record()), load_rules())
        for name, why in reasons.items():
            print(f"{name}: {why}")
        for line in problems:
            print(f"PROBLEM {line}")
        return 1 if problems else 0
    if len(argv) != 1:
        print("usage: lock_check.py [--explain] PATH/TO/requirements.lock", file=sys.stderr)
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
