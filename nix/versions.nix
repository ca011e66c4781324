# The versions this flake ships, told by the flake itself: every Python distribution in the closure
# of every Nix environment (each image, each check, the dev shell), with its nixpkgs version, by
# evaluation alone (seconds, nothing is built).
#   - `evaluated`: legacyPackages.<system>.nixpkgs-versions (`nix eval --json .#nixpkgs-versions`);
#     `nix run .#update-versions` writes nix/nixpkgs-versions.toml from it and re-locks.
#   - `mismatches`: that evaluation against nix/nixpkgs-versions.toml, one line per difference;
#     checks.locked-versions fails at evaluation on any.
{
  pkgs,
  pythonPackages,
  # name -> the top-level Python modules of that environment
  environments,
}:
let
  inherit (pkgs) lib;
  inherit (pythonPackages) python projects pythonAttribute;
  ps = python.pkgs;

  # PEP 503, as nix/lock_check.py: `Typing_Extensions` and `typing-extensions` are one distribution.
  canonical = name: lib.toLower (builtins.replaceStrings [ "_" "." ] [ "-" "-" ] name);

  # The closure's distributions: nixpkgs' requiredPythonModules (what python.withPackages installs)
  # minus the interpreter and this repository's own distributions.
  distributionsOf =
    modules:
    map (drv: {
      pname = drv.pname or (lib.getName drv);
      version = drv.version or (lib.getVersion drv);
    }) (lib.filter (drv: drv ? pythonModule) (ps.requiredPythonModules modules));

  # name -> { version; environments; } over all environments.
  packages = lib.foldlAttrs (
    acc: environment: modules:
    lib.foldl' (
      acc': drv:
      let
        name = canonical drv.pname;
        seen =
          acc'.${name} or {
            inherit (drv) version;
            environments = [ ];
          };
      in
      acc'
      // {
        ${name} = seen // {
          environments = seen.environments ++ [ environment ];
          # Two environments of one interpreter share one package set; a second version is a bug
          # of this file, and shows up as a mismatch.
          version = if seen.version == drv.version then drv.version else "${seen.version} and ${drv.version}";
        };
      }
    ) acc (lib.filter (drv: !(projects ? ${drv.pname})) (distributionsOf modules))
  ) { } environments;

  evaluated = {
    python = {
      attribute = pythonAttribute;
      inherit (python) version;
    };
    inherit packages;
  };

  record = lib.importTOML ./nixpkgs-versions.toml;
  recorded = lib.mapAttrs' (
    name: row: lib.nameValuePair (canonical name) row.version
  ) record.packages;
  fix = "(run: nix run .#update-versions)";
  mismatches =
    lib.optional (record.python.version != python.version || record.python.attribute != pythonAttribute)
      "python: the flake ships ${pythonAttribute} ${python.version}, nix/nixpkgs-versions.toml records ${record.python.attribute} ${record.python.version} ${fix}"
    ++ lib.concatLists (
      lib.mapAttrsToList (
        name: row:
        if !(recorded ? ${name}) then
          [
            "${name} ${row.version}: in ${lib.concatStringsSep ", " row.environments}, not in nix/nixpkgs-versions.toml ${fix}"
          ]
        else
          lib.optional (recorded.${name} != row.version)
            "${name}: the flake ships ${row.version}, nix/nixpkgs-versions.toml records ${recorded.${name}} ${fix}"
      ) packages
    )
    ++ map (name: "${name}: recorded in nix/nixpkgs-versions.toml, in no Nix environment ${fix}") (
      lib.attrNames (removeAttrs recorded (lib.attrNames packages))
    );
in
{
  inherit evaluated mismatches;
}
