# OCI images: one per [images.<key>] entry of images.toml, the single source of truth (shared
# with docker-compose.yml), all built by `mkImage`. Packages: <key>-image and load-images.
{ pkgs, pythonPackages }:
let
  inherit (pkgs) dockerTools lib;
  spec = builtins.fromTOML (builtins.readFile ./images.toml);
  uid = toString spec.uid;
  gid = toString spec.gid;

  # /etc/passwd and /etc/group with root, nobody and the non-root user the containers run as.
  nss = dockerTools.fakeNss.override {
    extraPasswdLines = [ "${spec.user}:x:${uid}:${gid}::/var/empty:/bin/sh" ];
    extraGroupLines = [ "${spec.user}:x:${gid}:" ];
  };

  # Python environments of the services' interpreter, by `package`, for the images with
  # `requirements` (flower). nixpkgs has Flower only as python313Packages.flower, a library whose
  # command is celery's `flower` subcommand (an entry point): in the environment, its `celery` finds
  # the subcommand, and its `python3` serves the healthcheck.
  pythonEnvironments = lib.mapAttrs' (
    _: image:
    lib.nameValuePair image.package (
      pythonPackages.python.withPackages (
        _: lib.concatMap (pythonPackages.resolveWith { }) image.requirements
      )
    )
  ) (lib.filterAttrs (_: image: image ? requirements) spec.images);

  # nixpkgs attributes that images.toml names, changed for the images: redis without libsystemd
  # (nothing in a container talks to systemd), and the Python environments above.
  nixpkgsOverrides = pythonEnvironments // {
    redis = pkgs.redis.override { withSystemd = false; };
  };

  # `package` is a flake package (a Python service, built without its tests: `checks` runs
  # them) or else a nixpkgs attribute (redis, flower).
  packageOf = name: pythonPackages.untested.${name} or nixpkgsOverrides.${name} or pkgs.${name};

  dropNulls = lib.filterAttrs (_: value: value != null);

  mkImage =
    image:
    let
      pkg = packageOf image.package;
      workdir = image.workdir or null;
      ports = image.ports or [ ];
      exposedPorts = lib.genAttrs (map (port: "${toString port}/tcp") ports) (_: { });
    in
    dockerTools.buildLayeredImage {
      inherit (image) name;
      inherit (spec) tag;
      contents = [
        pkg
        dockerTools.caCertificates
        nss
      ];
      # Relative paths: these commands run in the image's root, not in the build sandbox's /.
      extraCommands = "mkdir -m 1777 tmp";
      # fakeroot records the owner, so the non-root user can write its working directory.
      fakeRootCommands = lib.optionalString (workdir != null) ''
        mkdir -p .${workdir}
        chown ${uid}:${gid} .${workdir}
      '';
      config = dropNulls {
        User = spec.user;
        Entrypoint = [ "${pkg}/bin/${image.entrypoint}" ];
        Cmd = image.cmd or null;
        # /bin holds links to the package's programs, so compose healthchecks in exec form
        # (["CMD", "worker", "healthcheck"]) find them by name.
        Env = [
          "PATH=/bin"
          "PYTHONUNBUFFERED=1"
        ]
        ++ lib.mapAttrsToList (name: value: "${name}=${toString value}") (image.env or { });
        ExposedPorts = if ports == [ ] then null else exposedPorts;
        WorkingDir = workdir;
        Labels = dropNulls {
          "org.opencontainers.image.title" = image.name;
          "org.opencontainers.image.version" = spec.tag;
          "org.opencontainers.image.source" = spec.source or null;
        };
      };
    };

  images = lib.mapAttrs (_: mkImage) spec.images;
  imagePackages = lib.mapAttrs' (key: lib.nameValuePair "${key}-image") images;

  # `nix run .#load-images` loads every image into Docker. Docker is deliberately not a runtime
  # input: the user's own `docker` on PATH talks to their daemon.
  loadCommands = map (image: "docker load < ${image}") (lib.attrValues images);
  load-images = pkgs.writeShellApplication {
    name = "load-images";
    text = lib.concatStringsSep "\n" loadCommands;
  };
in
{
  # For checks.nix: `locked-versions` checks these environments against requirements.lock too.
  inherit pythonEnvironments;

  packages = imagePackages // {
    inherit load-images;
  };

  apps.load-images = {
    type = "app";
    program = lib.getExe load-images;
    meta.description = "Load the celery-stack images into the local Docker daemon";
  };
}
