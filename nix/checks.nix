# checks.<system>: each package (its own pytest run), the cross-service tests and formatting.
{ pkgs, pythonPackages }:
let
  inherit (pkgs) lib;
  inherit (pythonPackages) python;
  ps = python.pkgs;

  # The four packages importable (applications become Python modules through toPythonModule),
  # with pytest, hypothesis and pyyaml (the consistency test reads docker-compose.yml).
  testModules = [
    pythonPackages.common
    ps.pytest
    ps.hypothesis
    ps.pyyaml
  ]
  ++ map ps.toPythonModule (lib.attrValues pythonPackages.services);
  testEnv = python.withPackages (_: testModules);

  # Only the files the cross-service tests read.
  integrationSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../tests
      ./.
      # tests/test_consistency.py compares these with nix/, images.toml and docker-compose.yml.
      ../flake.nix
      ../common/pyproject.toml
      ../worker/pyproject.toml
      ../order-service/pyproject.toml
      ../notification-service/pyproject.toml
      # The scripted notification channels that the fault tests plug in.
      ../notification-service/tests/scripted_channels.py
      (lib.fileset.maybeMissing ../docker-compose.yml)
      (lib.fileset.maybeMissing ../pyproject.toml)
      (lib.fileset.maybeMissing ../pytest.ini)
      (lib.fileset.maybeMissing ../conftest.py)
    ];
  };

  # The services' own console scripts, which the tests spawn by name.
  servicesBin = lib.makeBinPath (lib.attrValues pythonPackages.services);

  # tests/ against a redis-server the tests start on loopback; tests/container needs Docker.
  integration = pkgs.stdenvNoCC.mkDerivation {
    name = "celery-stack-integration-tests";
    src = integrationSrc;
    nativeBuildInputs = [
      testEnv
      pkgs.redis
    ];
    buildCommand = ''
      cp -r "$src" source
      chmod -R u+w source
      cd source
      export HOME="$TMPDIR"
      export PATH="${servicesBin}:$PATH"
      ${testEnv}/bin/python -m pytest -p no:cacheprovider \
        --ignore=tests/container -m "not container" tests
      touch "$out"
    '';
  };

  nixSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../flake.nix
      (lib.fileset.fileFilter (file: file.hasExt "nix") ./.)
    ];
  };

  formatting = pkgs.stdenvNoCC.mkDerivation {
    name = "celery-stack-nixfmt";
    src = nixSrc;
    nativeBuildInputs = [ pkgs.nixfmt ];
    buildCommand = ''
      cd "$src"
      nixfmt --check flake.nix nix/*.nix
      touch "$out"
    '';
  };

  checks = pythonPackages.packages // {
    inherit integration formatting;
  };
in
checks
