# The repository's four Python distributions, built with Python 3.13 (named explicitly, never
# `python3`). One `common-tasks` derivation is shared by the three services.
{ pkgs }:
let
  inherit (pkgs) lib;
  python = pkgs.python313;
  ps = python.pkgs;

  # Runtime dependencies from common/pyproject.toml. celery[redis] is celery plus its `redis`
  # extra (kombu's Redis transport, i.e. redis-py), taken from nixpkgs' own celery.
  commonDependencies = [
    ps.celery
    ps.pydantic
    ps.pydantic-settings
    ps.redis
  ]
  ++ ps.celery.optional-dependencies.redis;

  # Each service's runtime dependencies besides common-tasks (see its pyproject.toml).
  serviceDependencies = {
    worker = [ ];
    order-service = [
      ps.flask
      ps.gunicorn
    ];
    notification-service = [ ];
  };

  # One distribution: its folder alone is the source (pyproject.toml, src/, tests/), hatchling
  # builds it, and its tests run in the check phase.
  build =
    builder: dir: pname: dependencies: extraAttrs:
    let
      src = ../. + "/${dir}";
    in
    builder (
      {
        inherit pname src dependencies;
        version = (lib.importTOML (src + "/pyproject.toml")).project.version;
        pyproject = true;
        build-system = [ ps.hatchling ];

        # The tests start their own redis-server on a free loopback port, so redis only has to be
        # on PATH (redisTestHook would start a second server on port 6379 that nobody uses).
        doCheck = true;
        nativeCheckInputs = [
          ps.pytestCheckHook
          ps.hypothesis
          pkgs.redis
        ];
        # pytestCheckHook runs after the install phase, but $out/bin is not on PATH by itself,
        # and the tests spawn the console scripts by name.
        preCheck = ''
          export HOME="$(mktemp -d)"
          export PATH="$out/bin:$PATH"
        '';
        pythonImportsCheck = [ (lib.replaceStrings [ "-" ] [ "_" ] pname) ];
      }
      // extraAttrs
    );

  common = build ps.buildPythonPackage "common" "common-tasks" commonDependencies { };
  # Each service's console script has the service's name (`nix run .#worker`).
  mkService =
    name: deps:
    build ps.buildPythonApplication name name ([ common ] ++ deps) { meta.mainProgram = name; };
  services = lib.mapAttrs mkService serviceDependencies;
in
{
  inherit
    python
    common
    services
    commonDependencies
    serviceDependencies
    ;

  # packages.<system>: the four distributions under their distribution names.
  packages = services // {
    common-tasks = common;
  };
}
