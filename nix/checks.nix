# checks.<system>: each package (its own pytest run), the cross-service tests, the locked versions
# (at evaluation), formatting, and the images: each one's stream, and the VM test that runs them
# (x86_64-linux). The images' packages skip their tests: they run here, once.
{
  pkgs,
  pythonPackages,
  images,
  versions,
  vmTest,
}:
let
  inherit (pkgs) lib;
  inherit (pythonPackages) python tested;
  ps = python.pkgs;

  # Every distribution importable (applications become Python modules through toPythonModule).
  modulesOf = set: map ps.toPythonModule (lib.attrValues set);

  # With pytest and pyyaml (the consistency and fault tests read docker-compose.yml),
  # kubernetes-validate (tests/test_kubernetes.py) and flower (tests/test_flower.py runs it);
  # tests/ does not use hypothesis.
  testModules = modulesOf tested ++ [
    ps.pytest
    ps.pyyaml
    ps.kubernetes-validate
    ps.flower
  ];
  testEnv = python.withPackages (_: testModules);

  # Only the files the cross-service tests read.
  integrationSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../tests
      ./.
      # tests/test_consistency.py compares these with nix/, images.toml and docker-compose.yml.
      ../flake.nix
      # Every distribution's pyproject.toml (and the root one).
      (lib.fileset.fileFilter (file: file.name == "pyproject.toml") ../.)
      # tests/test_locked_versions.py: the lock against nix/nixpkgs-versions.toml and lock-rules.
      ../requirements.lock
      ../requirements.in
      # ... and the record's nixpkgs revision against flake.lock.
      ../flake.lock
      # The scripted notification channels that the fault tests plug in.
      ../notification-service/tests/scripted_channels.py
      (lib.fileset.maybeMissing ../docker-compose.yml)
      # tests/test_kubernetes.py renders and checks the manifests.
      ../deploy
      (lib.fileset.maybeMissing ../pytest.ini)
      (lib.fileset.maybeMissing ../conftest.py)
    ];
  };

  # The services' own console scripts, which the tests spawn by name.
  servicesBin = lib.makeBinPath (lib.attrValues tested);

  # tests/ against a redis-server the tests start on loopback; tests/container needs Docker.
  integration = pkgs.stdenvNoCC.mkDerivation {
    name = "celery-stack-integration-tests";
    src = integrationSrc;
    # procps: tests/test_faults.py finds the worker's children with pgrep; kustomize:
    # tests/test_kubernetes.py.
    nativeBuildInputs = [
      testEnv
      pkgs.redis
      pkgs.procps
      pkgs.kustomize
    ];
    buildCommand = ''
      cp -r "$src" source
      chmod -R u+w source
      cd source
      export HOME="$TMPDIR"
      export PATH="${servicesBin}:$PATH"
      # One fixed schedule for the chaos soak (tests/test_chaos_soak.py): the check's outcome does
      # not depend on a seed drawn at build time.
      export CHAOS_SEED=1129
      ${testEnv}/bin/python -m pytest -p no:cacheprovider \
        --ignore=tests/container -m "not container" tests
      touch "$out"
    '';
  };

  # nix/nixpkgs-versions.toml against the flake's own evaluation (nix/versions.nix), compared
  # while the check is instantiated: a drift fails `nix flake check` in seconds, before any build,
  # one line per difference (`nix flake show` still lists the check).
  locked-versions = pkgs.runCommand "celery-stack-locked-versions" {
    mismatches =
      if versions.mismatches == [ ] then
        "none"
      else
        throw (
          "nix/nixpkgs-versions.toml differs from what the flake ships:\n"
          + lib.concatLines versions.mismatches
        );
  } "touch $out";

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

in
{
  # For nix/versions.nix: the Python modules of the integration check's environment.
  environments."check/integration" = testModules;

  checks =
    tested
    // lib.mapAttrs' (key: lib.nameValuePair "${key}-image-stream") images.streams
    // {
      inherit integration locked-versions formatting;
    }
    // lib.optionalAttrs (vmTest != null) { images-vm = vmTest; };
}
