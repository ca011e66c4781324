# checks.<system>: each package (its own pytest run), the cross-service tests, every image and
# load-images (so `nix flake check` builds them; the images' packages skip tests, run here once),
# the locked versions and formatting.
{
  pkgs,
  pythonPackages,
  images,
}:
let
  inherit (pkgs) lib;
  inherit (pythonPackages) python tested untested;
  ps = python.pkgs;

  # Every distribution importable (applications become Python modules through toPythonModule).
  modulesOf = set: map ps.toPythonModule (lib.attrValues set);

  # With pytest and pyyaml (the consistency and fault tests read docker-compose.yml),
  # kubernetes-validate (tests/test_kubernetes.py) and flower (tests/test_flower.py runs it);
  # tests/ does not use hypothesis.
  testEnv = python.withPackages (
    _:
    modulesOf tested
    ++ [
      ps.pytest
      ps.pyyaml
      ps.kubernetes-validate
      ps.flower
    ]
  );

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

  # The Python distributions the images ship (same versions as the tested ones) against
  # requirements.lock, so the lock describes what runs in production.
  imagePackages = lib.filter (name: untested ? ${name}) (
    lib.mapAttrsToList (_: image: image.package) (lib.importTOML ./images.toml).images
  );
  imageEnv = python.withPackages (_: map (name: ps.toPythonModule untested.${name}) imagePackages);
  locked-versions = pkgs.stdenvNoCC.mkDerivation {
    name = "celery-stack-locked-versions";
    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [
        ../requirements.lock
        ./lock_check.py
      ];
    };
    # The services' environment, then each Python environment an image ships as it is (flower).
    buildCommand = ''
      cd "$src"
      ${imageEnv}/bin/python nix/lock_check.py requirements.lock
    ''
    + lib.concatMapStrings (env: "${env}/bin/python nix/lock_check.py requirements.lock\n") (
      lib.attrValues images.pythonEnvironments
    )
    + ''
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

  checks =
    pythonPackages.packages
    // images.packages
    // {
      inherit integration locked-versions formatting;
    };
in
checks
