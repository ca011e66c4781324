{
  description = "celery-stack: order-service, worker and notification-service on Celery + Redis";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      linux = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # macOS gets the dev shell; images are Linux images (built by a Linux builder).
      darwin = [
        "x86_64-darwin"
        "aarch64-darwin"
      ];

      # Everything for one system; each concern lives in its own file under nix/.
      perSystem =
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          pythonPackages = import ./nix/python-packages.nix { inherit pkgs; };
          devShell = import ./nix/dev-shell.nix { inherit pkgs pythonPackages; };
          images = import ./nix/images.nix {
            inherit pkgs pythonPackages;
            revision = self.rev or self.dirtyRev or "unknown";
            shortRevision = self.shortRev or self.dirtyShortRev or "unknown";
          };
          # The checks build the images with a fixed revision label, so that a commit that changes
          # no image rebuilds none (and re-runs no VM test); they differ from `images` in that label.
          checkedImages = import ./nix/images.nix {
            inherit pkgs pythonPackages;
            revision = "checked";
            shortRevision = "checked";
          };
          kubernetes = import ./nix/kubernetes.nix { inherit pkgs; };
          versions = import ./nix/versions.nix {
            inherit pkgs pythonPackages;
            environments =
              lib.mapAttrs' (key: lib.nameValuePair "image/${key}") images.pythonModules
              // pythonPackages.checkEnvironments
              // checks.environments
              // devShell.environments;
          };
          checks = import ./nix/checks.nix {
            inherit pkgs pythonPackages versions;
            images = checkedImages;
            vmTest =
              if system == "x86_64-linux" then
                import ./nix/vm-test.nix {
                  inherit pkgs;
                  inherit (checkedImages.packages) load-images;
                }
              else
                null;
          };
          update-versions = import ./nix/update-versions.nix { inherit pkgs pythonPackages; };
        in
        {
          packages = pythonPackages.packages // images.packages // kubernetes.packages;
          # macOS: update-versions only (the images' scripts are Linux programs).
          apps = lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux images.apps // update-versions.apps;
          checks = checks.checks // kubernetes.packages;
          devShells.default = devShell.shell;
          # `nix eval --json .#nixpkgs-versions`: what the flake ships (nix/versions.nix). Under
          # legacyPackages because it is not a derivation (`nix flake check` does not look inside).
          legacyPackages.nixpkgs-versions = versions.evaluated;
          # `nix fmt` formats every .nix file of the tree (nixfmt through treefmt).
          formatter = pkgs.nixfmt-tree;
        };

      outputsBySystem = lib.genAttrs (linux ++ darwin) perSystem;
      collect = systems: name: lib.genAttrs systems (system: outputsBySystem.${system}.${name});
    in
    {
      packages = collect linux "packages";
      apps = collect (linux ++ darwin) "apps";
      checks = collect linux "checks";
      legacyPackages = collect linux "legacyPackages";
      devShells = collect (linux ++ darwin) "devShells";
      formatter = collect (linux ++ darwin) "formatter";
    };
}
