"""Write nix/nixpkgs-versions.toml from the flake's own evaluation (stdlib only).

    nix eval --json .#nixpkgs-versions | python nix/write_versions.py NIXPKGS_REV > nix/nixpkgs-versions.toml

`nix run .#update-versions` runs exactly this, then re-locks. The input is the flake output
`nixpkgs-versions` (nix/versions.nix): the interpreter, and every Python distribution of every Nix
environment with the environments that hold it.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import date

HEADER = """\
# The Python distributions of every Nix environment of this flake (images, checks, dev shell) and
# their versions in the pinned nixpkgs: requirements.lock pins exactly these (./dev lock), and
# checks.locked-versions compares this file with the flake's evaluation before anything builds.
#
# Written by `nix run .#update-versions` (nix/write_versions.py); do not edit rows by hand: run it
# after every `nix flake update`. `provenance` says how each row was obtained.
"""

# A version nixpkgs builds from a git snapshot ("0.3.0-unstable-2026-03-26") is not on the package
# index: the lock pins the release it follows.
SNAPSHOT = re.compile(r"^(.+?)-unstable-\d{4}-\d{2}-\d{2}$")


def toml_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return json.dumps(value)  # a JSON string is a TOML basic string


def inline_table(row: dict[str, object]) -> str:
    return "{ " + ", ".join(f"{key} = {toml_value(value)}" for key, value in row.items()) + " }"


def render(source: dict[str, str], python: dict[str, str], packages: dict[str, dict[str, object]]) -> str:
    lines = [HEADER, "[source]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in source.items()]
    lines += ["", "[python]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in python.items()]
    lines += ["", "[packages]"]
    lines += [f"{name} = {inline_table(row)}" for name, row in sorted(packages.items())]
    return "\n".join(lines) + "\n"


def from_evaluation(evaluated: dict, nixpkgs_rev: str) -> str:
    provenance = f"evaluated at nixpkgs {nixpkgs_rev[:12]} on {date.today().isoformat()}"
    packages: dict[str, dict[str, object]] = {}
    for name, row in evaluated["packages"].items():
        entry: dict[str, object] = {"version": row["version"]}
        if snapshot := SNAPSHOT.match(row["version"]):
            entry["locked"] = snapshot[1]
        entry["provenance"] = "evaluated"
        entry["environments"] = sorted(row["environments"])
        packages[name] = entry
    return render(
        {"nixpkgs": nixpkgs_rev, "provenance": provenance},
        {**evaluated["python"], "provenance": "evaluated"},
        packages,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: nix eval --json .#nixpkgs-versions | write_versions.py NIXPKGS_REV", file=sys.stderr)
        return 2
    sys.stdout.write(from_evaluation(json.load(sys.stdin), argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
