# OCI images: one per [images.<key>] entry of images.toml, the single source of truth (shared
# with docker-compose.yml), all from one argument set (`imageArgs`).
#   packages: <key>-image (a .tar.gz, `docker load < result`), load-images (also the default)
#   apps: load-images, push-images (skopeo, to a registry named on the command line)
#   streams: the same images as streaming scripts (checks and the VM test run them)
# Each image is tagged `tag` (what compose and Kubernetes name) and `tag-<revision>`, and labelled
# with the git revision it was built from.
{
  pkgs,
  pythonPackages,
  # self.rev (or self.dirtyRev) and self.shortRev (or self.dirtyShortRev) of the flake
  revision,
  shortRevision,
}:
let
  inherit (pkgs) dockerTools lib;
  spec = builtins.fromTOML (builtins.readFile ./images.toml);
  uid = toString spec.uid;
  gid = toString spec.gid;
  revisionTag = "${spec.tag}-${shortRevision}";

  # /etc/passwd and /etc/group with root, nobody and the non-root user the containers run as (by
  # number: a runtime can check runAsNonRoot without reading /etc/passwd).
  nss = dockerTools.fakeNss.override {
    extraPasswdLines = [ "${spec.user}:x:${uid}:${gid}::/var/empty:/sbin/nologin" ];
    extraGroupLines = [ "${spec.user}:x:${gid}:" ];
  };

  # The top-level Python modules of each image that ships Python (nix/versions.nix): the service
  # (an application made a module, so that its dependencies count), or the `requirements` (flower).
  # nixpkgs has Flower only as python313Packages.flower, a library whose command is celery's `flower`
  # subcommand (an entry point): in an environment of both, its `celery` finds the subcommand.
  pythonModules =
    lib.mapAttrs
      (
        _: image:
        if image ? requirements then
          lib.concatMap (pythonPackages.resolveWith { }) image.requirements
        else
          [ (pythonPackages.python.pkgs.toPythonModule pythonPackages.untested.${image.package}) ]
      )
      (
        lib.filterAttrs (
          _: image: image ? requirements || pythonPackages.untested ? ${image.package}
        ) spec.images
      );

  # `package` is a flake package (a Python service, built without its tests: `checks` runs them),
  # a Python environment of `requirements` (flower), or else a nixpkgs attribute (redis, from the
  # binary cache as it is: an override would compile it and run its test suite on every machine).
  packageOf =
    key: image:
    if image ? requirements then
      pythonPackages.python.withPackages (_: pythonModules.${key})
    else
      pythonPackages.untested.${image.package} or pkgs.${image.package};

  dropNulls = lib.filterAttrs (_: value: value != null);

  imageArgs =
    key: image:
    let
      pkg = packageOf key image;
      workdir = image.workdir or null;
      ports = image.ports or [ ];
      exposedPorts = lib.genAttrs (map (port: "${toString port}/tcp") ports) (_: { });
    in
    {
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
        User = "${uid}:${gid}";
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
          "org.opencontainers.image.revision" = revision;
          "org.opencontainers.image.source" = spec.source or null;
        };
      };
    };

  streams = lib.mapAttrs (
    key: image: dockerTools.streamLayeredImage (imageArgs key image)
  ) spec.images;
  # The same arguments: buildLayeredImage compresses the output of this very stream.
  tarballs = lib.mapAttrs (
    key: image: dockerTools.buildLayeredImage (imageArgs key image)
  ) spec.images;

  # `nix run .#load-images` streams every image into Docker and adds the revision tag. Docker is
  # deliberately not a runtime input: the user's own `docker` on PATH talks to their daemon.
  load-images = pkgs.writeShellApplication {
    name = "load-images";
    text = lib.concatMapStrings (key: ''
      ${streams.${key}} | docker load
      docker tag ${spec.images.${key}.name}:${spec.tag} ${spec.images.${key}.name}:${revisionTag}
    '') (lib.attrNames spec.images);
  };

  # `nix run .#push-images -- REGISTRY [skopeo copy options]`: every image, both tags, to
  # REGISTRY/<name> (e.g. ghcr.io/acme). Credentials as skopeo finds them (`skopeo login`, or
  # --dest-creds among the options). skopeo buffers each streamed archive in a temporary file
  # (containers/image reads a non-seekable docker-archive that way). At the end it prints the
  # `kustomize edit set image` lines that pin a Kubernetes overlay to what it pushed, by digest.
  push-images = pkgs.writeShellApplication {
    name = "push-images";
    runtimeInputs = [ pkgs.skopeo ];
    text = ''
      if [ $# -lt 1 ]; then
        echo "usage: nix run .#push-images -- REGISTRY [skopeo copy options]  (e.g. ghcr.io/acme)" >&2
        exit 2
      fi
      registry="''${1%/}"
      shift
      # The user's signature policy if they have one, else nixpkgs' copy of skopeo's default.
      policy=()
      if [ ! -e /etc/containers/policy.json ] && [ ! -e "''${XDG_CONFIG_HOME:-$HOME/.config}/containers/policy.json" ]; then
        policy=(--policy ${pkgs.skopeo}/etc/containers/default-policy.json)
      fi
      digests="$(mktemp -d)"
      trap 'rm -rf "$digests"' EXIT
    ''
    + lib.concatMapStrings (key: ''
      target="docker://$registry/${spec.images.${key}.name}"
      for tag in ${spec.tag} ${revisionTag}; do
        # The second copy finds every layer in the registry already and sends only the manifest.
        ${streams.${key}} | skopeo "''${policy[@]}" copy --digestfile "$digests/${key}" "$@" \
          docker-archive:/dev/stdin "$target:$tag"
      done
    '') (lib.attrNames spec.images)
    + ''
      echo "pushed; to pin a Kubernetes overlay to these images by digest, run in its directory:"
    ''
    + lib.concatMapStrings (key: ''
      echo "  kustomize edit set image ${spec.images.${key}.name}=$registry/${spec.images.${key}.name}@$(cat "$digests/${key}")"
    '') (lib.attrNames spec.images);
  };

  app = drv: description: {
    type = "app";
    program = lib.getExe drv;
    meta.description = description;
  };
in
{
  inherit pythonModules streams;

  packages = lib.mapAttrs' (key: lib.nameValuePair "${key}-image") tarballs // {
    inherit load-images push-images;
    default = load-images;
  };

  apps = {
    load-images = app load-images "Load the celery-stack images into the local Docker daemon";
    push-images = app push-images "Copy the celery-stack images to a registry: push-images REGISTRY";
    default = app load-images "Load the celery-stack images into the local Docker daemon";
  };
}
