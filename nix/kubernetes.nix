# packages.kubernetes-manifests: deploy/kubernetes rendered by nixpkgs' kustomize, one YAML file per
# variant (base.yaml, and keda.yaml, dev.yaml, ... per overlay), every image's name and tag set from
# images.toml, so the YAML names exactly the images this flake builds. Each variant is built through
# a kustomization of its own that sets the images (tests/test_kubernetes.py renders it the same way).
{ pkgs }:
let
  inherit (pkgs) lib;
  spec = lib.importTOML ./images.toml;
  images = lib.mapAttrsToList (_: image: {
    inherit (image) name;
    newTag = spec.tag;
  }) spec.images;

  root = ../deploy/kubernetes;
  src = lib.fileset.toSource {
    inherit root;
    fileset = root;
  };
  overlays = lib.attrNames (
    lib.filterAttrs (_: type: type == "directory") (builtins.readDir (root + "/overlays"))
  );
  variants = [ "base" ] ++ map (name: "overlays/${name}") overlays;

  # kustomization.yaml accepts JSON.
  withImages =
    variant:
    builtins.toJSON {
      apiVersion = "kustomize.config.k8s.io/v1beta1";
      kind = "Kustomization";
      resources = [ "../../src/${variant}" ];
      inherit images;
    };
  render = variant: ''
    mkdir -p "with-images/${baseNameOf variant}"
    printf '%s' ${lib.escapeShellArg (withImages variant)} > "with-images/${baseNameOf variant}/kustomization.yaml"
    kustomize build "with-images/${baseNameOf variant}" > "$out/${baseNameOf variant}.yaml"
  '';

  kubernetes-manifests =
    pkgs.runCommand "celery-stack-kubernetes-manifests"
      {
        nativeBuildInputs = [ pkgs.kustomize ];
      }
      (
        ''
          cp -r ${src} src
          chmod -R u+w src
          mkdir -p "$out"
        ''
        + lib.concatMapStrings render variants
      );
in
{
  packages = { inherit kubernetes-manifests; };
}
