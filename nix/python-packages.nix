# The repository's Python distributions, built with Python 3.13 (named explicitly, never
# `python3`): every top-level folder whose pyproject.toml has a [project] table. Everything about
# a distribution comes from its pyproject.toml: name, version, console scripts, dependencies
# (another folder's distribution by name, else the nixpkgs package of that name; `x[e]` adds
# nixpkgs' `optional-dependencies.e` of x) and the test-only `test` extra (check inputs).
{ pkgs }:
let
  inherit (pkgs) lib;
  # nixpkgs' Python 3.13 with one package changed: tornado (which Flower serves with) at 6.6.1, for
  # the server-side denial-of-service fixes of 6.5.8 to 6.6.1 (nixpkgs 26.05 ships 6.5.x). Its
  # own test suite is not re-run for the override.
  python = pkgs.python313.override {
    self = python;
    packageOverrides = self: super: {
      tornado = super.tornado.overridePythonAttrs (old: {
        version = "6.6.1";
        src = self.fetchPypi {
          pname = "tornado";
          version = "6.6.1";
          hash = "sha256-KOYxFAKvWciwLj+g9efY60ZbJQgTgYA7En2X5qQ5XVo=";
        };
        doCheck = false;
        # nixpkgs' changelog link names the GitHub tag of its own source.
        meta = old.meta // {
          changelog = "https://www.tornadoweb.org/en/stable/releases/v6.6.1.html";
        };
      });
    };
  };
  ps = python.pkgs;

  root = ../.;
  isProjectFolder =
    name: type:
    type == "directory"
    && builtins.pathExists (root + "/${name}/pyproject.toml")
    && (lib.importTOML (root + "/${name}/pyproject.toml")) ? project;
  folders = lib.attrNames (lib.filterAttrs isProjectFolder (builtins.readDir root));

  # By distribution name: the folder and its [project] table.
  projects = lib.listToAttrs (
    map (
      dir:
      let
        project = (lib.importTOML (root + "/${dir}/pyproject.toml")).project;
      in
      lib.nameValuePair project.name { inherit dir project; }
    ) folders
  );

  # "celery[redis]>=5.5" -> { name = "celery"; extras = [ "redis" ]; } (versions are checked by
  # nixpkgs' pythonRuntimeDepsCheckHook against the wheel's metadata).
  parseRequirement =
    requirement:
    let
      match = builtins.match "([A-Za-z0-9._-]+)(\\[([A-Za-z0-9._, -]+)])?.*" requirement;
      extras = builtins.elemAt match 2;
    in
    {
      name = lib.toLower (builtins.elemAt match 0);
      extras = if extras == null then [ ] else map lib.trim (lib.splitString "," extras);
    };

  # The packages one requirement brings: `locals` (a set by distribution name) for this
  # repository's distributions, nixpkgs' for the rest.
  resolveWith =
    locals: requirement:
    let
      req = parseRequirement requirement;
    in
    if projects ? ${req.name} then
      [ locals.${req.name} ]
    else
      [ ps.${req.name} ]
      ++ lib.concatMap (extra: ps.${req.name}.optional-dependencies.${extra}) req.extras;

  # A set of all distributions, with (`checks`, `packages`) or without (images) their tests in
  # the build: an image build must not run tests, and the untested set must not pull in a tested
  # dependency either.
  packageSet =
    doCheck:
    lib.fix (
      self:
      let
        resolve = resolveWith self;
        build =
          pname:
          { dir, project }:
          let
            scripts = project.scripts or { };
            folder = root + "/${dir}";
            hasTests = builtins.pathExists (folder + "/tests");
          in
          (if scripts == { } then ps.buildPythonPackage else ps.buildPythonApplication) {
            inherit pname;
            inherit (project) version;
            # The folder alone is the source (pyproject.toml, src/, and tests/ only where they
            # run: editing a test rebuilds no image); hatchling builds it.
            src =
              if doCheck then
                folder
              else
                lib.fileset.toSource {
                  root = folder;
                  fileset = lib.fileset.difference folder (lib.fileset.maybeMissing (folder + "/tests"));
                };
            pyproject = true;
            build-system = [ ps.hatchling ];
            dependencies = lib.concatMap resolve (project.dependencies or [ ]);

            doCheck = doCheck && hasTests;
            # The tests start their own redis-server on a free loopback port, so redis only has
            # to be on PATH (redisTestHook would start a second server on port 6379 that nobody
            # uses).
            nativeCheckInputs = [
              ps.pytestCheckHook
              pkgs.redis
            ]
            ++ testDependencies resolve project;
            # pytestCheckHook runs after the install phase, but $out/bin is not on PATH by
            # itself, and the tests spawn the console scripts by name.
            preCheck = ''
              export HOME="$(mktemp -d)"
              export PATH="$out/bin:$PATH"
            '';
            pythonImportsCheck = [ (lib.replaceStrings [ "-" ] [ "_" ] pname) ];
            # A service's console script has the service's name (`nix run .#worker`).
            meta = lib.optionalAttrs (scripts ? ${pname}) { mainProgram = pname; };
          };
      in
      lib.mapAttrs build projects
    );

  testDependencies =
    resolve: project: lib.concatMap resolve (project.optional-dependencies.test or [ ]);

  tested = packageSet true;
  untested = packageSet false;
in
{
  inherit
    python
    projects
    resolveWith
    tested
    untested
    ;
  # The interpreter's nixpkgs attribute, as nix/nixpkgs-versions.toml records it.
  pythonAttribute = "python313";

  # packages.<system>: the distributions under their names, built without their tests (`nix run
  # .#worker` starts the worker); checks.<system> holds the tested ones.
  packages = untested;

  # The Python modules of each package check's sandbox (nix/versions.nix): the build system,
  # pytest, the test extra and the package itself (an application made a module, so that its
  # dependencies count).
  checkEnvironments =
    lib.mapAttrs'
      (
        pname: package:
        lib.nameValuePair "check/${pname}" (
          [
            ps.hatchling
            ps.pytest
            (ps.toPythonModule package)
          ]
          ++ testDependencies (resolveWith tested) projects.${pname}.project
        )
      )
      (lib.filterAttrs (pname: _: builtins.pathExists (root + "/${projects.${pname}.dir}/tests")) tested);
}
