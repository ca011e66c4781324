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

  # The four distributions, with (`checks`, `packages`) or without (images) their tests in the
  # build: an image build must not run tests, and the untested set must not pull in the tested
  # common-tasks either.
  packageSet =
    doCheck:
    let
      # One distribution: its folder alone is the source (pyproject.toml, src/, tests/) and
      # hatchling builds it.
      build =
        builder: dir: pname: dependencies: extraAttrs:
        let
          src = ../. + "/${dir}";
        in
        builder (
          {
            inherit
              pname
              src
              dependencies
              doCheck
              ;
            version = (lib.importTOML (src + "/pyproject.toml")).project.version;
            pyproject = true;
            build-system = [ ps.hatchling ];

            # The tests start their own redis-server on a free loopback port, so redis only has
            # to be on PATH (redisTestHook would start a second server on port 6379 that nobody
            # uses). Only order-service's tests use hypothesis.
            nativeCheckInputs = [
              ps.pytestCheckHook
              pkgs.redis
            ]
            ++ lib.optional (dir == "order-service") ps.hypothesis;
            # pytestCheckHook runs after the install phase, but $out/bin is not on PATH by
            # itself, and the tests spawn the console scripts by name.
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
      inherit common services;
      # By distribution name.
      packages = services // {
        common-tasks = common;
      };
    };

  tested = packageSet true;
  untested = packageSet false;
in
{
  inherit
    python
    commonDependencies
    serviceDependencies
    tested
    untested
    ;

  # packages.<system>: the four tested distributions under their distribution names.
  inherit (tested) packages;
}
