# `nix run .#update-versions`, from the repository: after `nix flake update`, write
# nix/nixpkgs-versions.toml from the flake's own evaluation (nix/versions.nix, seconds, nothing is
# built), then re-lock requirements.lock to those versions (./dev lock). Nix itself is the user's.
{ pkgs, pythonPackages }:
let
  update-versions = pkgs.writeShellApplication {
    name = "update-versions";
    runtimeInputs = [
      # packaging: nix/lock_check.py evaluates the lock's environment markers with it.
      (pythonPackages.python.withPackages (ps: [ ps.packaging ]))
      pkgs.git
      pkgs.uv
    ];
    text = ''
      cd "$(git rev-parse --show-toplevel)"
      rev="$(python3 -c 'import json; print(json.load(open("flake.lock"))["nodes"]["nixpkgs"]["locked"]["rev"])')"
      record=nix/nixpkgs-versions.toml
      nix eval --json .#legacyPackages.x86_64-linux.nixpkgs-versions |
        python3 nix/write_versions.py "$rev" >"$record.new"
      mv "$record.new" "$record"
      echo "update-versions: $record written from nixpkgs $rev" >&2
      ./dev lock
      git --no-pager diff --stat -- "$record" requirements.lock
      # Every pin is recorded or development-only (nix/lock-rules.toml): else say which and fail.
      if ! python3 nix/lock_check.py --explain requirements.lock >/dev/null; then
        python3 nix/lock_check.py --explain requirements.lock | grep '^PROBLEM' >&2
        exit 1
      fi
    '';
  };
in
{
  apps.update-versions = {
    type = "app";
    program = pkgs.lib.getExe update-versions;
    meta.description = "Write nix/nixpkgs-versions.toml from the pinned nixpkgs and re-lock requirements.lock";
  };
}
