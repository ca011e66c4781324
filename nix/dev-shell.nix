# devShells.default (every system, macOS included): Python 3.13 with every dependency and every
# distribution of the tree installed in editable mode from the working tree (edits apply without a
# rebuild; console scripts and the pytest plugin included), plus redis, ruff, nixfmt, docker (the
# CLI with its compose plugin, using the user's own ~/.docker: contexts and credentials stay
# theirs), honcho, git (the shellHook finds the repository root with it), procps
# (tests/test_faults.py calls pgrep; on macOS nixpkgs' procps has no pgrep and the system's serves)
# and kustomize (tests/test_kubernetes.py).
{ pkgs, pythonPackages }:
let
  inherit (pkgs) lib;
  inherit (pythonPackages) python projects resolveWith;
  ps = python.pkgs;

  # A PEP 660 editable install of <repo>/<dir>/src for every distribution. $CELERY_STACK_ROOT is
  # expanded when Python starts (the shellHook sets it). Scripts and entry points come from the
  # folder's pyproject; dependencies resolve to the other editable distributions or nixpkgs.
  editables = lib.mapAttrs (
    pname:
    { dir, project }:
    ps.mkPythonEditablePackage {
      inherit pname;
      inherit (project) version;
      dependencies = lib.concatMap (resolveWith editables) (
        (project.dependencies or [ ]) ++ (project.optional-dependencies.test or [ ])
      );
      root = "$CELERY_STACK_ROOT/${dir}/src";
      scripts = project.scripts or { };
      entry-points = project.entry-points or { };
    }
  ) projects;

  # pytest and pyyaml: the cross-service tests (tests/ reads docker-compose.yml);
  # kubernetes-validate: tests/test_kubernetes.py; flower: its `celery flower` for
  # ./dev up --monitoring and tests/test_flower.py.
  devModules = [
    ps.pytest
    ps.pyyaml
    ps.kubernetes-validate
    ps.flower
  ]
  ++ lib.attrValues editables;
in
{
  # For nix/versions.nix.
  environments.dev-shell = devModules;

  shell = pkgs.mkShell {
    packages = [
      (python.withPackages (_: devModules))
      pkgs.redis
      pkgs.ruff
      pkgs.nixfmt
      # nixpkgs' docker CLI finds its compose plugin in its own store path (no DOCKER_CONFIG needed).
      pkgs.docker-client
      # ./dev up runs the Procfile with it.
      pkgs.honcho
      pkgs.git
      pkgs.procps
      pkgs.kustomize
    ];

    shellHook = ''
      export CELERY_STACK_ROOT="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
      echo "celery-stack (Python ${python.version}; packages editable from $CELERY_STACK_ROOT)"
      echo "  ./dev up                   run the stack"
      echo "  ./dev test                 run the tests"
      ${
        if pkgs.stdenv.hostPlatform.isDarwin then
          ''echo "  nix build .#packages.aarch64-linux.worker-image && docker load < result   (a Linux builder; likewise each image)"''
        else
          ''echo "  nix run .#load-images      build and load all images into Docker"''
      }
      echo "  docker compose up          run the stack from the loaded images"
    '';
  };
}
